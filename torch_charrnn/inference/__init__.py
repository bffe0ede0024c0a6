"""A trained model put to use, without Lightning: its checkpoint read (and upgraded from an earlier
release), text sampled from it, files scored, the model exported to plain PyTorch or ONNX. What
``charrnn sample``, ``score`` and ``export`` share, and ``CharRNN`` samples with."""
