import pytest
import torch
from transformers import TrainerCallback

from mtl.config import TrainConfig
from mtl.model import encoder_layer_of
from mtl.train import trainer as trainer_module
from mtl.train.trainer import ProgressiveUnfreezing, build_trainer, parameter_groups
from tests.factory import LAYERS, TINY, demo_rows, make_model, tokenized_set


def datasets(model, tokenizer, rows=32):
    """(training set, validation set): `rows` demo rows a task, and the first 8 of them."""
    data = {task: demo_rows(dataset, "train", rows)
            for task, dataset in (("topic", "ag_news"), ("sentiment", "tweet_eval_sentiment"))}
    folder = TINY.scratch("training-sets")
    return (tokenized_set(model, tokenizer, data, folder / "train"),
            tokenized_set(model, tokenizer, {task: r[:8] for task, r in data.items()}, folder / "validation"))


def snapshot(model):
    """Every parameter's value, on the CPU (the trainer moves the model to CUDA where there is one)."""
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters()}


def changed(before, model):
    return {name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach().cpu())}


def run(model, tokenizer, tmp_path, callbacks=(), **overrides):
    settings = dict(output_dir=str(tmp_path), max_steps=3, batch_size=8, grad_accumulation=1, logging_steps=1,
                    warmup_steps=0, encoder_lr=1e-3)
    settings.update(overrides)
    config = TrainConfig(**settings)
    train_set, eval_set = datasets(model, tokenizer)
    trainer = build_trainer(model, tokenizer, train_set, eval_set, config, list(callbacks))
    trainer.train()
    return trainer


def expected_lr(name: str) -> float:
    """The rate each parameter of the 2-layer tiny BERT should get with encoder_lr 2e-5, heads x5, layer decay 0.5:
    the top layer the full rate, each one below half the one above, the embeddings below layer 0."""
    for part, lr in ((".layer.1.", 2e-5), (".layer.0.", 1e-5), (".embeddings.", 5e-6), ("heads.", 1e-4)):
        if part in f".{name}":
            return lr
    raise AssertionError(f"no expected rate for {name}")


def test_parameter_groups_cover_everything_with_head_and_layer_rates(tiny_bert):
    model, _ = make_model(tiny_bert)
    assert model.encoder.num_layers == LAYERS == 2
    model.freeze(heads=("sentiment",))  # frozen parameters still belong to a group
    config = TrainConfig(encoder_lr=2e-5, head_lr_multiplier=5.0, layer_lr_decay=0.5)
    groups = parameter_groups(model, config)
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len(list(model.parameters())) == len({id(p) for p in grouped})
    by_param = {id(p): g for g in groups for p in g["params"]}
    for name, param in model.named_parameters():
        group = by_param[id(param)]
        no_decay = name.endswith("bias") or "LayerNorm" in name
        assert group["weight_decay"] == (0.0 if no_decay else 0.01), name
        assert group["lr"] == pytest.approx(expected_lr(name)), name
    assert encoder_layer_of("encoder.backbone.embeddings.word_embeddings.weight", 2) == -1
    assert encoder_layer_of("encoder.backbone.encoder.layer.1.output.dense.weight", 2) == 1
    assert encoder_layer_of("encoder.backbone.encoder.rel_embeddings.weight", 2) == 2  # DeBERTa: above every layer


@pytest.mark.parametrize(
    "freeze, moving",
    [
        (dict(freeze_backbone=True), lambda n: n.startswith("heads.")),
        (dict(freeze_heads=("sentiment",)), lambda n: not n.startswith("heads.sentiment.")),
    ],
    ids=["backbone-frozen", "one-head-frozen"],
)
def test_frozen_parameters_do_not_move_and_the_rest_train(tiny_bert, tmp_path, freeze, moving):
    model, tokenizer = make_model(tiny_bert)
    before = snapshot(model)
    run(model, tokenizer, tmp_path, weight_decay=0.5, **freeze)  # strong decay would show any creep
    moved = changed(before, model)
    expected = {n for n in before if moving(n)}
    # Position/type embedding rows never used by these short inputs get no gradient, hence no update.
    assert moved <= expected and moved
    assert expected - moved <= {n for n in expected if "embeddings" in n}


class RecordEpochs(TrainerCallback):
    def __init__(self, model):
        self.model, self.snapshots = model, [snapshot(model)]

    def on_epoch_end(self, args, state, control, **kwargs):
        self.snapshots.append(snapshot(self.model))


def test_progressive_unfreezing_phases(tiny_bert, tmp_path):
    model, tokenizer = make_model(tiny_bert)
    recorder = RecordEpochs(model)
    trainer = run(model, tokenizer, tmp_path, [recorder], max_steps=-1, epochs=3, progressive_unfreezing=True)
    assert trainer.state.epoch == 3
    pairs = zip(recorder.snapshots, recorder.snapshots[1:])
    phase_moves = [{n for n in a if not torch.equal(a[n], b[n])} for a, b in pairs]
    heads = lambda names: {n for n in names if n.startswith("heads.")}  # noqa: E731
    encoder = lambda names: {n for n in names if n.startswith("encoder.")}  # noqa: E731
    top = lambda names: {n for n in encoder(names) if f".layer.{LAYERS - 1}." in n}  # noqa: E731
    # epoch 0: heads only
    assert heads(phase_moves[0]) and not encoder(phase_moves[0])
    # epoch 1: the top quarter (rounded up: the top layer of 2) opens; embeddings and lower layers stay put
    assert top(phase_moves[1]) and encoder(phase_moves[1]) == top(phase_moves[1])
    # epoch 2: everything
    assert any(".layer.0." in n for n in phase_moves[2]) and any("embeddings" in n for n in phase_moves[2])


def test_each_phase_opens_the_expected_set(tiny_bert):
    model, _ = make_model(tiny_bert)
    model.freeze(heads=("topic",))
    schedule = ProgressiveUnfreezing(model, TrainConfig(progressive_unfreezing=True, unfreeze_from_layer=1))
    names = lambda: {n for n, p in model.named_parameters() if p.requires_grad}  # noqa: E731
    head = {n for n, _ in model.named_parameters() if n.startswith("heads.sentiment.")}
    schedule.apply(model, 0)
    assert names() == head
    schedule.apply(model, 1)
    opened = names() - head
    assert opened and all(".layer.1." in n for n in opened)
    schedule.apply(model, 2)
    assert names() == {n for n, _ in model.named_parameters() if not n.startswith("heads.topic.")}


def test_learning_rates_reach_the_optimizer(tiny_bert, tmp_path):
    model, tokenizer = make_model(tiny_bert)
    trainer = run(model, tokenizer, tmp_path, max_steps=1, encoder_lr=2e-5, warmup_steps=0)
    initial = {g["name"]: g["initial_lr"] for g in trainer.optimizer.param_groups}
    assert initial["head:topic:decay"] == pytest.approx(1e-4)
    assert initial[f"encoder:{LAYERS - 1}:decay"] == pytest.approx(2e-5)


def test_best_checkpoint_metrics_are_reported_per_task(tiny_bert, tmp_path):
    model, tokenizer = make_model(tiny_bert)
    trainer = run(model, tokenizer, tmp_path, max_steps=-1, epochs=2)
    evaluations = [e for e in trainer.state.log_history if "eval_score" in e]
    assert len(evaluations) == 2
    for entry in evaluations:
        per_task = [entry[f"eval_{t}_{m}"] for t in ("topic", "sentiment")
                    for m in ("accuracy", "macro_f1", "macro_recall")]
        assert entry["eval_score"] == pytest.approx(sum(per_task) / 6)
    assert trainer.state.best_metric == max(e["eval_score"] for e in evaluations)


@pytest.mark.parametrize("precision, cuda, bf16_gpu, flags, expected", [
    ("fp32", True, True, {"avx512_bf16"}, False),
    ("bf16", False, False, set(), True),
    ("auto", False, False, {"avx512f", "avx512_bf16"}, True),
    ("auto", False, False, {"amx_bf16"}, True),
    ("auto", False, False, {"avx2", "avx512f"}, False),
    ("auto", True, True, set(), True),
    ("auto", True, False, {"avx512_bf16"}, False),  # a GPU without bf16: the CPU's flags do not matter
])
def test_precision_auto_uses_bf16_only_on_native_bf16_hardware(monkeypatch, precision, cuda, bf16_gpu, flags,
                                                                expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_gpu)
    monkeypatch.setattr(trainer_module, "cpu_flags", lambda: flags)
    assert trainer_module.uses_bf16(precision) is expected


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_bf16_autocasts_the_training_forward_pass(tiny_bert, tmp_path, precision, dtype):
    model, tokenizer = make_model(tiny_bert)
    seen = []
    head = model.heads["topic"][-1]
    handle = head.register_forward_hook(lambda module, args, output: seen.append(output.dtype) if module.training
                                        else None)
    run(model, tokenizer, tmp_path, max_steps=1, precision=precision)
    handle.remove()
    assert seen and set(seen) == {dtype}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay float32


def test_the_training_loader_groups_batches_by_length_unless_told_not_to(tiny_bert, tmp_path):
    model, tokenizer = make_model(tiny_bert)
    train_set, eval_set = datasets(model, tokenizer)
    shares = {}
    for grouped in (True, False):
        config = TrainConfig(output_dir=str(tmp_path), max_steps=1, batch_size=4, group_by_length=grouped,
                             length_window=8)
        loader = build_trainer(model, tokenizer, train_set, eval_set, config).get_train_dataloader()
        masks = [batch["attention_mask"] for batch in loader]
        shares[grouped] = sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)
    assert shares[True] > shares[False]
