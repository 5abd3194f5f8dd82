"""The embedded synthetic corpus (espeak-ng TTS in real-corpus layouts)."""
