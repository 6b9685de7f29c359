"""Built-in source model families: BERT/RoBERTa, GPT-NeoX, Llama and Wav2Vec2/HuBERT/WavLM."""
