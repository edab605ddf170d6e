"""Training (torch): the Trainer subclass with parameter groups, unfreezing and task sampling (`trainer`), the
weighted multi-task loss (`losses`), and the train entry point that checks inputs, trains and publishes the
checkpoint (`run`)."""
