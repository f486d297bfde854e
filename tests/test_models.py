"""Model zoo: published parameter counts, any input size, one-line errors, conv-without-bias."""
import pytest
import torch
import torch.nn as nn

from models import ARCHS, build_model, count_params
from utils.errors import UsageError

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny convolutions run faster on one thread


# (arch, layers, width_factor, published count at 10 classes, docs/protocol.md "Reference figures").
# ResNets use 1x1-conv projection shortcuts (option B): ResNet-20 is 272,474 rather than option A's
# 269,722, still within 1% of the 0.27M quoted there. docs/datasets.md "Architectures" cites the others:
# VGG-16-BN and DenseNet-121 of kuangliu/pytorch-cifar (14.73M with conv biases, here none: 14.72M;
# 6.96M), MobileNetV2 = torchvision's 3,504,872 at 1000 classes less 990 classifier rows (2.24M).
PUBLISHED = [
    ("resnet", 20, 1, 0.272e6, 0.27e6),
    ("resnet", 56, 1, 0.855e6, 0.86e6),
    ("wideresnet", 28, 2, 1.467e6, 1.47e6),
    ("resnet", 18, 1, 11.17e6, 11.2e6),
    ("vgg", 16, 1, 14.73e6, 14.7e6),
    ("densenet", 121, 1, 6.96e6, 7.0e6),
    ("mobilenetv2", 53, 1, 3_504_872 - 990 * 1281, 2.24e6),
]


def test_mlp_is_mia_prunes_columnfc():
    """Purchase-100 (600 features, 100 classes): Linear 600-256-128-100, ReLU and dropout 0.1 after each
    hidden layer; Texas-100's first layer reads 6,169 features."""
    model = build_model("mlp", ARCHS["mlp"].default_layers, ARCHS["mlp"].default_width, 100, 600)
    linear = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert linear == [(600, 256), (256, 128), (128, 100)]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.1, 0.1]
    assert count_params(model) == 600 * 256 + 256 + 256 * 128 + 128 + 128 * 100 + 100
    assert count_params(build_model("mlp", 2, 1, 100, 6169)) == 6169 * 256 + 256 + 32896 + 12900
    widths = [m.out_features for m in build_model("mlp", 4, 2, 10, 5).modules() if isinstance(m, nn.Linear)]
    assert widths == [512, 256, 128, 64, 10]  # --layers hidden layers, halving; --width-factor multiplies them


def test_mlp_reads_a_feature_vector_as_stored():
    """Feature vectors arrive as [N, F, 1, 1] (data/datasets.py): the spatial mean is the identity."""
    torch.manual_seed(0)
    model = build_model("mlp", 2, 1, 5, 7).eval().double()
    x = torch.randn(3, 7, dtype=torch.float64)
    ref = model.fc(model.hidden(x))
    torch.testing.assert_close(model(x[:, :, None, None]), ref, rtol=0, atol=0)


def test_mobilenetv2_width_multiplier_and_depthwise_convs():
    one, two = (build_model("mobilenetv2", 53, k, 10, 3) for k in (1, 2))
    convs = [m for m in one.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 53  # --layers: the weight layers, the classifier included
    depthwise = [m for m in convs if m.groups > 1]
    assert len(depthwise) == 17 and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert two.fc.in_features == 2 * 1280 and count_params(two) > 3.5 * count_params(one)  # ~k^2 for the 1x1s


@pytest.mark.parametrize("arch, fewer", [("vgg", 2), ("densenet", 0)])
def test_every_listed_depth_builds_with_its_weight_layers(arch, fewer):
    """DenseNet-d has d weight layers (convs, transitions, the classifier); VGG-d the paper's d less the two
    4096-wide hidden Linear layers the CIFAR classifier drops."""
    for layers in ARCHS[arch].valid_layers:
        model = build_model(arch, layers, 1, 10, 3)
        assert sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules()) == layers - fewer


@pytest.mark.parametrize("arch, layers, width, published, reference", PUBLISHED)
def test_parameter_counts(arch, layers, width, published, reference):
    n = count_params(build_model(arch, layers, width, 10, 3))
    assert abs(n - published) / published < 0.01, n
    assert abs(n - reference) / reference < 0.01, n


# Small but covering every block type: 3-stage and 4-stage ResNets, pre-activation WRN.
SHAPES = [("resnet", 20, 1), ("resnet", 18, 1), ("resnet", 110, 1), ("wideresnet", 16, 2), ("wideresnet", 28, 2),
          ("vgg", 11, 1), ("mobilenetv2", 53, 1)]


CASES = [(*s, c, n) for s in SHAPES for c, n in [(1, 8), (3, 32)] if (s[1], n) != (110, 32)]  # 110 at 8x8 only: slow on CPU


@pytest.mark.parametrize("arch, layers, width, in_channels, size", CASES)
def test_forward_any_input_size(arch, layers, width, in_channels, size):
    model = build_model(arch, layers, width, 7, in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 7)
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == 7


@pytest.mark.parametrize("arch, layers, width", [("resnet", 20, 1), ("wideresnet", 16, 2)])
def test_channels_last_matches_contiguous(arch, layers, width):
    torch.manual_seed(0)
    model = build_model(arch, layers, width, 10, 3).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch, layers, width", [("resnet", 20, 1), ("wideresnet", 16, 2)])
def test_traces_without_graph_breaks(arch, layers, width):
    """fullgraph=True fails on any graph break; the eager backend keeps it fast (no code generation)."""
    model = build_model(arch, layers, width, 10, 1).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize("arch, layers, width", [("resnet", 20, 1), ("resnet", 18, 1), ("wideresnet", 16, 2),
                                                 ("vgg", 11, 1), ("densenet", 121, 1), ("mobilenetv2", 53, 1)])
def test_convs_have_no_bias_and_init(arch, layers, width):
    model = build_model(arch, layers, width, 10, 3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.bias is None for m in convs)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_every_listed_resnet_depth_builds():
    for layers in ARCHS["resnet"].valid_layers:
        assert count_params(build_model("resnet", layers, 1, 10, 3)) > 0


def test_unknown_arch_lists_valid_names():
    with pytest.raises(UsageError, match=f"unknown arch 'vit'; valid: {', '.join(ARCHS)}$") as e:
        build_model("vit", 16, 1, 10, 3)
    assert "\n" not in str(e.value)
    assert {"resnet", "wideresnet"} <= set(ARCHS)  # the study's two; more may be registered


def test_every_arch_builds_at_its_default_depth_for_every_input_the_pipeline_feeds():
    """The contract of a registry entry (README "Extending"): a valid default depth, and logits for
    8x8 grayscale (digits) as well as 32x32 colour (CIFAR) images."""
    for name, spec in ARCHS.items():
        assert spec.valid(spec.default_layers), name
        for channels, size in ((1, 8), (3, 32)):
            model = build_model(name, spec.default_layers, spec.default_width, 10, channels).eval()
            assert model(torch.zeros(2, channels, size, size)).shape == (2, 10), (name, size)


@pytest.mark.parametrize("arch, layers, valid", [
    ("resnet", 34, "18, 20, 32, 44, 56, 110"),
    ("resnet", 0, "18, 20, 32, 44, 56, 110"),
    ("wideresnet", 27, "(depth - 4) % 6 == 0"),
    ("wideresnet", 4, "(depth - 4) % 6 == 0"),  # zero blocks per stage
])
def test_bad_depth_lists_valid_depths(arch, layers, valid):
    with pytest.raises(UsageError, match="valid: ") as e:
        build_model(arch, layers, 2, 10, 3)
    msg = str(e.value)
    assert valid in msg and str(layers) in msg and "\n" not in msg


def test_bad_width_factor():
    with pytest.raises(UsageError, match="width-factor"):
        build_model("wideresnet", 28, 0, 10, 3)
