"""The loss options: class weights, fixed task weights and learned uncertainty weights, against hand-computed
figures; the learned weights train in their own optimizer group; the options' config round trip and checks; and a
run with uncertainty weighting that resumes, reloads and exports as a plain model."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import TrainerCallback

from mtl.config import ModelOptions, TrainConfig
from mtl.data.files import TaskFiles
from mtl.errors import ConfigError
from mtl.loss import MultitaskLoss
from mtl.model import MultitaskModel
from mtl.train import run as workflow
from mtl.train.losses import balanced_class_weights, training_loss
from mtl.train.trainer import build_trainer, parameter_groups
from tests.factory import demo_texts, encode, make_model
from tests.train.test_trainer import datasets, run

# Two tasks in a batch of 3 rows: task 0 (3 classes) has rows 0 and 1, task 1 (2 classes) row 2.
LOGITS_0 = [[2.0, 0.5, -1.0], [0.1, 0.3, 1.2]]
LABELS_0 = [0, 2]
LOGITS_1 = [[0.4, -0.6]]
LABELS_1 = [1]


def ce(logits: list[float], label: int) -> float:
    """Cross-entropy of one row, from its definition."""
    return math.log(sum(math.exp(z) for z in logits)) - logits[label]


def scored(tasks=(0, 1)):
    rows = {0: (LOGITS_0, LABELS_0), 1: (LOGITS_1, LABELS_1)}
    return [(t, torch.tensor(rows[t][0]), torch.tensor(rows[t][1])) for t in tasks]


# The per-task summed cross-entropies by hand.
S0 = ce(LOGITS_0[0], 0) + ce(LOGITS_0[1], 2)
S1 = ce(LOGITS_1[0], 1)


def test_default_loss_is_each_task_summed_over_the_batch():
    loss = MultitaskLoss([1.0, 1.0])(scored(), batch_size=3)
    assert loss.item() == pytest.approx((S0 + S1) / 3, rel=1e-6)


def test_task_weights_multiply_each_task():
    loss = MultitaskLoss([2.0, 0.5])(scored(), batch_size=3)
    assert loss.item() == pytest.approx((2.0 * S0 + 0.5 * S1) / 3, rel=1e-6)
    zero = MultitaskLoss([0.0, 1.0])(scored(), batch_size=3)
    assert zero.item() == pytest.approx(S1 / 3, rel=1e-6)


def test_class_weights_scale_rows_and_the_batch_size_normalises():
    weights = [0.5, 1.0, 3.0]  # rows 0 and 1 of task 0 have classes 0 and 2
    loss = MultitaskLoss([1.0, 1.0], [weights, None])(scored(), batch_size=3)
    weighted = 0.5 * ce(LOGITS_0[0], 0) + 3.0 * ce(LOGITS_0[1], 2)
    assert loss.item() == pytest.approx((weighted + S1) / 3, rel=1e-6)
    # not PyTorch's weighted mean, which divides by the rows' weight sum (0.5 + 3.0) instead of the row count
    assert loss.item() != pytest.approx(weighted / 3.5 + S1 / 3, rel=1e-3)
    both = MultitaskLoss([2.0, 1.0], [weights, None])(scored(), batch_size=3)
    assert both.item() == pytest.approx((2.0 * weighted + S1) / 3, rel=1e-6)


def test_uncertainty_weighting_is_exp_minus_s_times_the_task_loss_plus_s():
    loss_fn = MultitaskLoss([1.0, 1.0], uncertainty=True)
    assert loss_fn(scored(), batch_size=3).item() == pytest.approx((S0 + S1) / 3, rel=1e-6)  # s = 0: plain loss
    with torch.no_grad():
        loss_fn.log_variance.copy_(torch.tensor([0.5, -1.0]))
    expected = math.exp(-0.5) * S0 / 3 + 0.5 + math.exp(1.0) * S1 / 3 - 1.0
    assert loss_fn(scored(), batch_size=3).item() == pytest.approx(expected, rel=1e-6)
    # A task absent from the batch adds neither its loss nor its regulariser.
    alone = loss_fn(scored(tasks=(0,)), batch_size=2).item()
    assert alone == pytest.approx(math.exp(-0.5) * S0 / 2 + 0.5, rel=1e-6)


def test_uncertainty_gradient_pushes_s_towards_the_task_loss():
    """d/ds [exp(-s) L + s] = 1 - exp(-s) L: negative while L > exp(s), so s rises towards log L."""
    loss_fn = MultitaskLoss([1.0, 1.0], class_weights=[], uncertainty=True)
    loss_fn(scored(), batch_size=1).backward()
    torch.testing.assert_close(loss_fn.log_variance.grad, torch.tensor([1 - S0, 1 - S1]))


def test_balanced_class_weights_follow_scikit_learn():
    from mtl.config import TaskSpec

    spec = TaskSpec("t", ("a", "b", "c"))
    weights = balanced_class_weights(spec, [0, 0, 0, 1, 2, 2])  # n / (k * count): 6 / (3 * [3, 1, 2])
    assert weights == pytest.approx([2 / 3, 2.0, 1.0])
    assert 3 * weights[0] + weights[1] + 2 * weights[2] == pytest.approx(6)  # they average 1 over the rows
    with pytest.raises(ConfigError, match="task 't': no training example of 'c', so its weight would be infinite"):
        balanced_class_weights(spec, [0, 1, 1])


# --- the model and the Trainer ------------------------------------------------------------------------------------


def test_the_models_default_loss_is_the_plain_one_to_the_bit(tiny_bert):
    """No option: exactly the loss before the options existed (each task's summed CE over the batch size)."""
    model, tokenizer = make_model(tiny_bert)
    model.eval()
    inputs = encode(tokenizer, demo_texts(8)[:6], model.model_config.input_names)
    task_ids, labels = torch.tensor([0, 1, 1, 0, 1, 0]), torch.tensor([3, 2, 0, 1, 1, 0])
    loss = model(**inputs, task_ids=task_ids, labels=labels)["loss"]
    pooled = model.encoder(**inputs)
    total = pooled.new_zeros(())
    for index, head in enumerate(model.heads.values()):
        mine = task_ids == index
        total = total + torch.nn.functional.cross_entropy(head(pooled[mine]), labels[mine], reduction="sum")
    assert torch.equal(loss, total / 6)
    assert not [k for k in model.state_dict() if k.startswith("loss.")]  # no saved state without learning


def test_training_loss_counts_class_weights_on_the_training_set(tiny_bert):
    model, tokenizer = make_model(tiny_bert)
    train_set, _ = datasets(model, tokenizer)
    config = TrainConfig(class_weights="balanced", task_weights={"sentiment": 0.25})
    loss_fn = training_loss(config, model.model_config, train_set)
    assert loss_fn.task_weights.tolist() == [1.0, 0.25]
    for index, spec in enumerate(model.model_config.tasks):
        labels = [item["labels"] for item in train_set.__getitems__(range(len(train_set))) if item["task_ids"] == index]
        counts = torch.bincount(torch.tensor(labels), minlength=len(spec.labels)).double()
        expected = len(labels) / (len(spec.labels) * counts)
        torch.testing.assert_close(loss_fn.class_weights(index).double(), expected)
    assert loss_fn.log_variance is None
    assert training_loss(TrainConfig(), model.model_config, train_set).class_weights(0) is None


def groups_by_param(groups):
    return {id(p): g["name"] for g in groups for p in g["params"]}


def test_learned_weights_train_in_their_own_group(tiny_bert, tmp_path):
    model, tokenizer = make_model(tiny_bert)
    plain_groups = parameter_groups(model, TrainConfig(encoder_lr=1e-3))  # `run`'s rate
    trainer = run(model, tokenizer, tmp_path, max_steps=2, uncertainty_weighting=True)
    log_variance = model.loss.log_variance
    assert log_variance.shape == (2,)
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    own = groups["loss:no_decay"]
    assert len(own["params"]) == 1 and own["params"][0] is log_variance
    assert own["weight_decay"] == 0.0 and own["initial_lr"] == pytest.approx(trainer.train_config.head_lr)
    others = [g for name, g in groups.items() if name != "loss:no_decay"]
    assert all(p is not log_variance for g in others for p in g["params"])
    # Every other group is the one the run would have had without the learned weights.
    assert groups_by_param(others) == groups_by_param(plain_groups)
    assert {g["name"]: (g["initial_lr"], g["weight_decay"]) for g in others} == {
        g["name"]: (g["lr"], g["weight_decay"]) for g in plain_groups}
    # They moved (from 0: every task weight 1), and a batch of both tasks gives each a gradient.
    assert (log_variance.detach() != 0).all()
    train_set, _ = datasets(model, tokenizer)
    model.zero_grad()
    batch = trainer.data_collator([train_set[i] for i in range(len(train_set))])
    # The trainer moved the model to its device (CUDA where there is one): the batch goes there too.
    model(**{name: tensor.to(log_variance.device) for name, tensor in batch.items()})["loss"].backward()
    assert (log_variance.grad != 0).all()


def test_task_weight_zero_leaves_a_task_out_of_the_gradient(tiny_bert, tmp_path):
    model, tokenizer = make_model(tiny_bert)
    train_set, eval_set = datasets(model, tokenizer)
    config = TrainConfig(output_dir=str(tmp_path), max_steps=1, task_weights={"sentiment": 0.0})
    trainer = build_trainer(model, tokenizer, train_set, eval_set, config)
    batch = trainer.data_collator([train_set[i] for i in range(len(train_set))])  # both tasks
    model.train()
    device = next(model.parameters()).device  # the trainer's device (CUDA where there is one)
    model(**{name: tensor.to(device) for name, tensor in batch.items()})["loss"].backward()
    assert all(p.grad is None or not p.grad.any() for p in model.heads["sentiment"].parameters())
    assert all(p.grad is not None and p.grad.any() for p in model.heads["topic"].parameters())


# --- the options in the config ------------------------------------------------------------------------------------


def test_loss_options_round_trip_through_json():
    config = TrainConfig(task_weights={"topic": 2.0, "sentiment": 0.0}, class_weights="balanced")
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    learned = TrainConfig(uncertainty_weighting=True)
    assert TrainConfig.from_dict(json.loads(json.dumps(learned.to_dict()))) == learned
    assert TrainConfig.from_dict({}).task_weights == {} and TrainConfig().class_weights == "none"  # older configs


@pytest.mark.parametrize("kwargs, message", [
    (dict(task_weights={"topic": -1.0}), r"task_weights\['topic'\] must be in \[0, 1e\+06\], got -1.0"),
    (dict(task_weights={"topic": float("nan")}), r"task_weights\['topic'\] must be a number in \[0, 1e\+06\], got nan"),
    (dict(task_weights={"topic": float("inf")}), "must be a number"),
    (dict(task_weights={"topic": True}), "must be a number"),
    (dict(task_weights=[("topic", 1.0)]), "task_weights must map task names to numbers"),
    (dict(class_weights="inverse"), "unknown class_weights 'inverse'; valid: none, balanced"),
    (dict(uncertainty_weighting=True, task_weights={"topic": 2.0}), "task weights or uncertainty weighting, not both"),
])
def test_bad_loss_options_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


def test_task_weights_are_checked_against_the_tasks():
    names = ("topic", "sentiment")
    assert TrainConfig(task_weights={"sentiment": 3}).task_weight_list(names) == (1.0, 3.0)
    with pytest.raises(ConfigError, match="task weight for unknown task 'spam'; valid: topic, sentiment"):
        TrainConfig(task_weights={"spam": 1.0}).task_weight_list(names)
    with pytest.raises(ConfigError, match="every task's weight is 0"):
        TrainConfig(task_weights={"topic": 0, "sentiment": 0.0}).task_weight_list(names)


# --- a run with learned weights: resume, reload, export -----------------------------------------------------------


class StopAfterFirstEpoch(TrainerCallback):
    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_training_stop = True


def train_learned(files, backbone, output, callbacks=(), resume=False, **overrides):
    config = TrainConfig(output_dir=str(output), epochs=2, batch_size=8, grad_accumulation=2, logging_steps=1,
                         encoder_lr=5e-4, uncertainty_weighting=True, class_weights="balanced", **overrides)
    return workflow.train(files, config, ModelOptions(backbone=str(backbone)), resume=resume,
                          callbacks=list(callbacks))


def test_a_run_with_learned_weights_resumes_reloads_and_exports(tiny_bert, small_task_files, tmp_path):
    from mtl.export import ExportOptions, export_checkpoint

    files = [TaskFiles(name, train, valid) for name, (train, valid) in small_task_files.items()]
    straight = train_learned(files, tiny_bert, tmp_path / "straight")
    train_learned(files, tiny_bert, tmp_path / "resumed", [StopAfterFirstEpoch()])
    with pytest.raises(ConfigError, match="continues a run trained with --uncertainty-weighting"):
        workflow.train(files, TrainConfig(output_dir=str(tmp_path / "resumed"), epochs=2),
                       ModelOptions(backbone=str(tiny_bert)), resume=True)
    resumed = train_learned(files, tiny_bert, tmp_path / "resumed", resume=True)
    assert resumed.metrics == straight.metrics

    learned = [json.loads((tmp_path / name / "metrics.json").read_text())["log_variances"]
               for name in ("straight", "resumed")]
    assert set(learned[0]) == {"topic", "sentiment"} and any(v != 0 for v in learned[0].values())
    assert learned[0] == pytest.approx(learned[1], abs=1e-6)  # the resumed run continued the learned weights
    saved = json.loads((tmp_path / "resumed" / "train_config.json").read_text())
    assert saved["uncertainty_weighting"] is True and saved["class_weights"] == "balanced"

    # The published model is encoder and heads only: it reloads strictly, equal to the straight run, and exports.
    model = MultitaskModel.from_pretrained(tmp_path / "resumed")
    assert model.loss.log_variance is None
    straight_weights = MultitaskModel.from_pretrained(tmp_path / "straight").state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, straight_weights[name], msg=name)
    result = export_checkpoint(tmp_path / "resumed", tmp_path / "onnx",
                               ExportOptions(precisions=("fp32",), optimize=False, threads=1))
    assert (result.output / "model.onnx").is_file()
