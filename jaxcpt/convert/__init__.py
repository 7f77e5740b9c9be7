"""Hugging Face directory <-> jaxcpt model: `hf_import` (load_hf), `hf_export` (save_hf, export),
the family tensor tables (`xlmr`, `t5`) and `hf_files` (config, safetensors, tokenizer files)."""
