"""What ``charrnn --help`` and ``charrnn fit --help`` say first (here so that neither imports the other)."""

DESCRIPTION = """A character-level RNN (tanh, GRU, LSTM, LN-LSTM or LN-GRU cells, stacked), with Lightning.

  charrnn fit [--config configs/X.yaml] [--model.hidden_size 512 ...]   train
  charrnn validate|test|predict --ckpt_path P                          evaluate
  charrnn sample --ckpt_path P [--prime TEXT] ...                       generate text
  charrnn score --ckpt_path P FILE [FILE ...]                           bits per character of files
  charrnn export --ckpt_path P OUT.pt|OUT.onnx                          a file for plain PyTorch or ONNX
  charrnn gradcheck [--hidden_size 64 ...]                              check the BPTT

`charrnn fit --help` lists every option; `charrnn sample --help`, `charrnn score --help`,
`charrnn export --help` and `charrnn gradcheck --help` theirs."""
COMMANDS = ("fit", "validate", "test", "predict", "sample", "score", "export", "gradcheck")
USAGE = f"usage: charrnn {{{','.join(COMMANDS)}}} [options]\n\n{DESCRIPTION}\n"
