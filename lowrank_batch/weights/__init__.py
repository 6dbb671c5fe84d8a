"""The weight store, installs from paths and fsspec URLs, safetensors checks, LoRA adapters;
the shipped default model lives in default/."""
