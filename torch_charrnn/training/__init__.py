"""The Lightning glue: the LightningModule, the TensorBoard monitor, schedules, checkpoint I/O."""
