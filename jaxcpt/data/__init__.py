"""Data side: corpus files, and (with seqio) tasks, preprocessors and feature converters."""
