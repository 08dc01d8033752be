"""The model zoo of notebook 04: torchvision's weight metadata read into rows, the comparisons
the notebook states, the package's ResNets costing what the metadata says, the timer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torchvision
from torch import nn

from resnet_lessons import count_flops, zoo
from resnet_lessons.zoo import (
    BUILDERS,
    NETWORKS,
    OTHERS,
    RESNETS,
    ZooRow,
    ZooTable,
    cheaper_than,
    recipe_name,
    recipe_versus_depth,
    time_inference,
    time_resnets,
    zoo_table,
)


@pytest.fixture(scope="module")
def table() -> ZooTable:
    return zoo_table()


def test_every_network_has_v1_weights_and_the_resnets_from_50_have_v2(table):
    for model in RESNETS + OTHERS:
        assert table.get(model, "V1").network == NETWORKS[model][0]
    for model in ("resnet50", "resnet101", "resnet152"):
        assert table.get(model, "V2").recipe == "new recipe"
    assert {r.model for r in table} == set(RESNETS + OTHERS)
    assert all(r.weights.startswith("IMAGENET1K_V") for r in table)


def test_numbers_are_positive_and_plausible(table):
    for row in table:
        assert 0 < row.gflops < 20, row
        assert 1_000_000 < row.params < 100_000_000, row
        assert 60 < row.top1 < 90, row  # ImageNet-1K top-1 in percent, not a fraction


def test_resnet_rows_are_torchvisions_published_numbers(table):
    # torchvision's ResNet docs: ResNet-50 V1 76.13 and V2 80.858 top-1, 4.09 GFLOPS, 25.6 M
    assert table.get("resnet50", "V1").top1 == pytest.approx(76.13)
    assert table.get("resnet50", "V2").top1 == pytest.approx(80.858)
    assert table.get("resnet50").gflops == pytest.approx(4.089)
    assert table.get("resnet50").params == 25_557_032


def test_the_resnets_get_costlier_and_more_accurate_with_depth(table):
    rows = [table.get(model, "V1") for model in RESNETS]
    assert [r.gflops for r in rows] == sorted(r.gflops for r in rows)
    assert [r.top1 for r in rows] == sorted(r.top1 for r in rows)


def test_the_new_recipe_gains_more_than_going_from_50_to_152_layers(table):
    recipe, depth = recipe_versus_depth(table)
    assert recipe == pytest.approx(80.858 - 76.13)
    assert depth == pytest.approx(78.312 - 76.13)
    assert recipe > depth > 0


def test_cheaper_designs_reach_resnet50s_accuracy(table):
    ref = table.get("resnet50")
    found = cheaper_than(table)
    assert found, "no network is cheaper than ResNet-50 V1 and at least as accurate"
    assert [r.gflops for r in found] == sorted(r.gflops for r in found)
    assert all(r.top1 >= ref.top1 and r.gflops < ref.gflops for r in found)
    assert {"efficientnet_b0", "regnet_y_1_6gf"} <= {r.model for r in found}
    assert table.get("efficientnet_b0").gflops / ref.gflops < 0.1
    # with torchvision's newer recipe on both, RegNetY-1.6GF matches ResNet-50 V2
    assert [r.model for r in cheaper_than(table, "resnet50", "V2")] == ["regnet_y_1_6gf"]


@pytest.mark.parametrize("depth", sorted(BUILDERS))
def test_the_timed_networks_cost_what_the_metadata_says(table, depth):
    """time_resnets times the package's torchvision variant: the same GFLOPS as the weights
    (count_flops counts a multiply-add as 2 FLOPs; torchvision's GFLOPS count it once)."""
    with torch.device("meta"):
        net = BUILDERS[depth](in_channels=3, num_classes=1000, variant="torchvision")
    gflops = count_flops(net, (1, 3, 224, 224)) / 2 / 1e9
    row = table.get(f"resnet{depth}")
    assert gflops == pytest.approx(row.gflops, abs=0.001)
    assert sum(p.numel() for p in net.parameters()) == row.params


def test_the_table_prints_one_line_per_weights(table):
    text = str(table)
    assert len(text.splitlines()) == len(table) + 2
    assert "ResNet-50          V2       new recipe" in text
    assert repr(table) == text


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet51'.*resnet50"):
        zoo_table(["resnet51"])
    with pytest.raises(TypeError, match="list of names"):
        zoo_table("resnet50")
    with pytest.raises(KeyError, match="no resnet18 V2.*resnet18 V1"):
        zoo_table(["resnet18"]).get("resnet18", "V2")
    with pytest.raises(ValueError, match=r"depth \[19\]"):
        time_resnets([18, 19])


def test_missing_metadata_says_which_torchvision_is_needed(monkeypatch):
    """Before 0.15, torchvision's metadata had no GFLOPS ("_ops"): the error says so."""
    weights = torchvision.models.get_model_weights("resnet18").IMAGENET1K_V1
    old = SimpleNamespace(name=weights.name, meta={k: v for k, v in weights.meta.items()
                                                   if k != "_ops"})  # fmt: skip
    monkeypatch.setattr(zoo, "_weights_enum", lambda model: [old])
    with pytest.raises(RuntimeError, match=r"no '_ops'.*torchvision>=0\.15"):
        zoo_table(["resnet18"])


def test_recipe_names():
    assert recipe_name("These weights reproduce closely the results of the paper using a "
                       "simple training recipe.") == "simple recipe"  # fmt: skip
    assert recipe_name("... by using TorchVision's `new training recipe <https://x>`_.") == (
        "new recipe"
    )
    assert recipe_name("... using a modified version of TorchVision's new training recipe") == (
        "new recipe, modified"
    )
    assert recipe_name("These weights are ported from the original paper.") == (
        "ported from the paper"
    )
    assert recipe_name("") == "not stated"


def test_rows_know_their_name_year_and_version():
    row = ZooRow("convnext_tiny", "IMAGENET1K_V1", 82.5, 4.456, 28_589_128, "new recipe")
    assert (row.network, row.year, row.version) == ("ConvNeXt-T", 2022, "V1")
    assert ZooRow("alexnet", "IMAGENET1K_V1", 56.5, 0.7, 61_100_840, "").network == "alexnet"


def test_time_inference_returns_seconds_per_image():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    seconds = time_inference(model, (4, 3, 2, 2), repeats=2)
    assert 0 < seconds < 1
    assert not model.training
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        time_inference(model, (1, 12), repeats=0)
    with pytest.raises(TypeError, match="warmup must be a whole number"):
        time_inference(model, (1, 12), warmup=0.5)
