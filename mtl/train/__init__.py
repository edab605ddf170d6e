"""Training (torch): the Trainer subclass with parameter groups, unfreezing and task sampling (`trainer`), the
weighted multi-task loss (`losses`), where a run writes and which checkpoint --resume continues from (`folders`,
no torch), the checks on that checkpoint's state before the Trainer reads it (`resume`), and the train entry point
that checks inputs, trains and publishes the checkpoint (`run`)."""
