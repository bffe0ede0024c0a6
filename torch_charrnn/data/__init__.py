"""Text as training data: the corpora, the encoded cache, and the stream/window DataModule.

Only ``datamodule`` imports Lightning, so importing ``torch_charrnn.data.encoded`` (as
``charrnn sample`` does) stays light."""
