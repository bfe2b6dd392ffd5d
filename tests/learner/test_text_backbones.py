"""The text backbones on the generic path: token ids in, logits out; second order
through both; the probe gets token ids; a local HF model folder loads offline; bad
folders and hub ids are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metasuite.config import from_dict
from metasuite.data.tasks import FewShotTasks
from metasuite.errors import ConfigError
from metasuite.learner.backbones import build_backbone
from text_helpers import TEXT_TINY, TINY_BERT, write_rows

pytest.importorskip("transformers")


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATASET_DIR", str(tmp_path))
    write_rows(tmp_path / "tinytext")
    return tmp_path


def config(**changes):
    return from_dict(TEXT_TINY | changes)


@pytest.mark.parametrize("backbone", [{}, TINY_BERT], ids=["text_conv", "hf"])
def test_second_order_meta_step_runs_and_adapting_lowers_the_support_loss(
    data_root: Path, backbone: dict
) -> None:
    cfg = config(
        **backbone,
        second_order=True,
        number_of_training_steps_per_iter=3,
        number_of_evaluation_steps_per_iter=3,
        init_inner_loop_learning_rate=0.5,
    )
    net = build_backbone(cfg)  # the probe ran a second-order step on token ids
    tasks = FewShotTasks.from_config(cfg, quiet=True)
    batch = tasks.train.batch([0])
    params = {k: v.clone().requires_grad_() for k, v in net.init_params().items()}
    names = list(net.adaptable_parameter_names(False))
    ce = torch.nn.functional.cross_entropy
    with net.mode(training=False):
        before = ce(net.forward(params, batch.support_x[0], 0), batch.support_y[0])
        grads = torch.autograd.grad(before, [params[n] for n in names], create_graph=True)
        stepped = params | {n: params[n] - 0.5 * g for n, g in zip(names, grads, strict=True)}
        after = ce(net.forward(stepped, batch.support_x[0], 1), batch.support_y[0])
        exact = torch.autograd.grad(after, [params[names[0]]])[0]
        # First order: the same step with the inner gradients detached.
        flat = params | {n: params[n] - 0.5 * g.detach() for n, g in zip(names, grads, strict=True)}
        first = ce(net.forward(flat, batch.support_x[0], 1), batch.support_y[0])
        approx = torch.autograd.grad(first, [params[names[0]]])[0]
    assert after.item() < before.item()
    assert torch.isfinite(exact).all()
    # The double backward ran through embedding, convolution or attention: it changes the
    # meta-gradient (a module without one would have failed in the probe or here).
    assert not torch.allclose(exact, approx, rtol=1e-4, atol=1e-7)


def test_a_local_model_folder_loads_offline_and_its_tokenizer_is_used(
    data_root: Path, tmp_path: Path
) -> None:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path / "tiny-bert"
    folder.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "of", "and"]
    vocab += [f"w{c}x{k}" for c in range(12) for k in range(6)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=2,
        )
    )
    model.save_pretrained(folder)
    cfg = config(backbone="hf", backbone_kwargs={"model": str(folder)}, tokenizer=str(folder))
    net = build_backbone(cfg)
    assert net.describe()["module"]["attention"] == "eager"
    loaded = net.module.model.bert.embeddings.word_embeddings.weight
    assert torch.equal(loaded, model.bert.embeddings.word_embeddings.weight)
    assert net.head.endswith("classifier")
    tasks = FewShotTasks.from_config(cfg, quiet=True)
    ids = tasks.train.batch([0]).support_x
    assert ids.max().item() < len(vocab) and (ids[:, :, 0] == vocab.index("[CLS]")).all()


def test_bad_model_folders_and_hub_ids_are_one_line(data_root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    (empty / "tokenizer.json").write_text("{}")
    cases = [
        ({"backbone": "hf", "backbone_kwargs": {"model": str(empty)}}, "holds no weights"),
        (
            {"backbone": "hf", "backbone_kwargs": {"model": "bert-base-uncased"}},
            "metasuite runs offline",
        ),
        ({"tokenizer": "google/bert_uncased_L-2_H-128_A-2"}, "save_pretrained"),
        ({"tokenizer": str(tmp_path / "tinytext")}, "holds no tokenizer"),
        ({"backbone": "conv"}, 'backbone "conv" reads images'),
    ]
    for changes, message in cases:
        with pytest.raises(ConfigError) as caught:
            build_backbone(config(**changes))
        assert message in str(caught.value), changes
        assert "\n" not in str(caught.value)
