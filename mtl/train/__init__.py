"""Training (torch): the Trainer subclass with parameter groups, unfreezing and task sampling (`trainer`), and the
train entry point that checks inputs, trains and publishes the checkpoint (`run`)."""
