"""Built-in tasks: text/audio classification, CTC speech recognition, intent, speaker ID, language modelling."""
