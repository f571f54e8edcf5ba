"""``extract_stage``: a nested subnetwork D_k as a standalone, ordinary network with equal outputs."""

from __future__ import annotations

import torch
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import Tensor, nn

from .cifar_resnet import CifarResNet


def _nested_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The nested model's state with the structural zeros applied (masked conv weights)."""
    tensors = dict(model.state_dict())
    for name, module in model.named_modules():
        if hasattr(module, "weight_mask"):
            tensors[f"{name}.weight"] = module.masked_weight().detach()
    return tensors


def _prefix(tensor: Tensor, shape: torch.Size) -> Tensor:
    return tensor[tuple(slice(0, size) for size in shape)] if tensor.dim() else tensor


def extract_width_stage(model: nn.Module, stage: int) -> nn.Module:
    spec = model.spec
    planes = tuple(spec.splits(c)[stage] for c in model.widths)  # D_k's width of every stage
    stem = spec.splits(model.stem_channels)[stage]
    head = model.fc[stage - 1]
    num_classes = head.out_features if isinstance(head, nn.Linear) else 0
    pool = model.global_pool.pool_type
    dd = {"device": model.conv1.weight.device, "dtype": model.conv1.weight.dtype}
    if model.stem_type == "imagenet" and model.shortcut_type == "projection":
        plain = ResNet(
            BasicBlock if model.block_type == "basic" else Bottleneck,
            model.layer_sizes,
            num_classes=num_classes,
            in_chans=model.conv1.in_channels,
            channels=planes,
            global_pool=pool,
            drop_rate=model.drop_rate,
            **dd,
        )
        _narrow_stem(plain, stem, dd)
        perm = None
    elif model.stem_type == "cifar" and model.shortcut_type == "zero_pad" and model.block_type == "basic":
        if stem != planes[0]:
            raise NotImplementedError("extracting a CIFAR network needs stem width == first stage width")
        plain = CifarResNet(
            model.layer_sizes[0],
            num_classes=num_classes,
            in_chans=model.conv1.in_channels,
            channels=planes,
            global_pool=pool,
            drop_rate=model.drop_rate,
            **dd,
        )
        perm = _cifar_permutations(model, stage)
    else:
        raise NotImplementedError(
            f"no plain counterpart for stem={model.stem_type!r} with shortcut={model.shortcut_type!r}"
        )

    source = _nested_tensors(model)
    state = {}
    for key, target in plain.state_dict().items():
        name = f"fc.{stage - 1}." + key[3:] if key.startswith("fc.") else key
        tensor = source[name]
        if perm is not None:
            tensor = _permute(key, tensor, perm)
        state[key] = _prefix(tensor, target.shape).clone()
    plain.load_state_dict(state)
    plain.train(model.training)
    return plain


def _narrow_stem(plain: ResNet, stem: int, dd: dict) -> None:
    """timm's ResNet fixes a 7x7 stem at 64 channels; D_k's stem has ``stem`` channels. Rebuild the
    stem and the first block (timm's own block class) at that width, in place."""
    if stem == plain.conv1.out_channels:
        return
    block = plain.layer1[0]
    block_cls = type(block)
    out = block.conv3.out_channels if isinstance(block, Bottleneck) else block.conv2.out_channels
    planes = block.conv1.out_channels
    plain.conv1 = nn.Conv2d(plain.conv1.in_channels, stem, 7, 2, 3, bias=False, **dd)
    plain.bn1 = nn.BatchNorm2d(stem, **dd)
    downsample = None
    if stem != out:
        downsample = nn.Sequential(nn.Conv2d(stem, out, 1, 1, bias=False, **dd), nn.BatchNorm2d(out, **dd))
    plain.layer1[0] = block_cls(stem, planes, 1, downsample=downsample, **dd)
    plain.feature_info[0]["num_chs"] = stem


def _cifar_permutations(model: nn.Module, stage: int) -> dict[int, Tensor]:
    """Channel order of each CIFAR stage: plain channel p holds nested channel perm[p].

    The nested option-A shortcut pads each stripe separately; the plain one pads once at the end.
    Both are the same network up to this permutation of every stage's channels.
    """
    spec = model.spec
    widths = [model.stem_channels, *model.widths]
    perms = {1: torch.arange(spec.splits(widths[1])[stage])}
    for s in (2, 3):
        inner, outer = spec.splits(widths[s - 1]), spec.splits(widths[s])
        location = {}  # nested input channel -> nested output channel of the padded shortcut
        zeros = []
        for j in range(1, stage + 1):
            width = inner[j] - inner[j - 1]
            for o in range(width):
                location[inner[j - 1] + o] = outer[j - 1] + o
                zeros.append(outer[j - 1] + width + o)
        perms[s] = torch.tensor([location[int(q)] for q in perms[s - 1]] + zeros)
    return perms


def _permute(key: str, tensor: Tensor, perms: dict[int, Tensor]) -> Tensor:
    """Reorder a nested tensor's channels into the plain network's order."""
    if key.startswith(("conv1.", "bn1.")):
        out_perm, in_perm = perms[1], None
    elif key.startswith("fc."):
        return tensor[:, perms[3]] if key.endswith("weight") else tensor
    else:
        layer = int(key[len("layer")])
        block = int(key.split(".")[1])
        out_perm = perms[layer]
        in_perm = perms[layer - 1] if (block == 0 and layer > 1 and ".conv1." in f".{key}") else perms[layer]
    if tensor.dim() == 0:
        return tensor
    tensor = tensor.index_select(0, out_perm.to(tensor.device))
    if tensor.dim() == 4 and in_perm is not None:
        tensor = tensor.index_select(1, in_perm.to(tensor.device))
    return tensor


def extract_depth_stage(model: nn.Module, stage: int) -> nn.Module:
    """D_stage of a depth-nested Sparse ResNet as a standalone network with copied weights.

    The interlacing is recursive: the units of levels <= k, renumbered in order, are exactly the
    k-level interlacing of N / 2^(L - k) units, with the same wiring. So D_k is the last stage of a
    k-level network of that size (for k = 1: a plain ``SparseResNet``, whose sparse rule is level
    1's wiring).
    """
    from .depth_resnet import DepthNestedSparseResNet
    from .sparse_resnet import SparseResNet

    units = model.units_per_stage // 2 ** (model.levels - stage)
    weight = model.conv1.weight
    args = dict(
        units_per_stage=units,
        channels=model.channels,
        stem=model.stem_kind,
        num_classes=model.num_classes,
        in_chans=model.in_chans,
        width=model.width,
        global_pool=model.global_pool.pool_type,
        drop_rate=model.drop_rate,
        device=weight.device,
        dtype=weight.dtype,
    )
    plain = SparseResNet(**args) if stage == 1 else DepthNestedSparseResNet(levels=stage, **args)
    mapped: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        target = _depth_key(model, key, stage)
        if target is not None:
            mapped[target] = value.clone()
    plain.load_state_dict(mapped, strict=True)
    plain.pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    return plain.train(model.training)


def _depth_key(model: nn.Module, key: str, depth: int) -> str | None:
    """Where ``key`` of a depth-nested model goes in its ``depth``-level extraction (None: not in it).
    Head keys (``fc``) map by depth level too, for a model with one head per level."""
    parts = key.split(".")
    if parts[0].startswith("stage") and parts[1] == "units":
        level_of = getattr(model, parts[0]).level_of
        index = int(parts[2])
        if level_of[index] > depth:
            return None
        parts[2] = str(sum(1 for lv in level_of[:index] if lv <= depth))  # its place in D_depth
    elif parts[0].startswith("transition"):  # transitionR.levels.<level - 1>.*
        if int(parts[2]) >= depth:
            return None
        if depth == 1:
            parts = [parts[0], *parts[3:]]
    elif parts[0] in ("norms", "fc") and parts[1].isdigit():
        if int(parts[1]) >= depth:
            return None
        if depth == 1:
            parts = ["norm" if parts[0] == "norms" else "fc", *parts[2:]]
    return ".".join(parts)


def extract_width_depth_stage(model: nn.Module, stage: int) -> nn.Module:
    """D_stage of a width-depth-nested Sparse ResNet as a standalone network with dense weights.

    D_stage = (width w, depth d) is the d-level depth-nested network on N / 2^(L - d) units, at the
    prefix width of stripes <= w, with the block-triangular zeros copied into dense weights (for
    d = 1 a plain ``SparseResNet``). Its last stage is D_stage. Its head for an earlier depth level
    l comes from this model's stage (w, l) where the schedule has one, else it stays untrained.
    """
    from .depth_resnet import DepthNestedSparseResNet
    from .sparse_resnet import SparseResNet

    schedule, spec = model.schedule, model.spec
    width, depth = schedule.width(stage), schedule.depth(stage)
    weight = model.conv1.weight
    args = dict(
        units_per_stage=model.units_per_stage // 2 ** (model.levels - depth),
        channels=tuple(spec.splits(c)[width] for c in model.widths),
        stem="cifar",
        num_classes=model.num_classes,
        in_chans=model.in_chans,
        global_pool=model.global_pool.pool_type,
        drop_rate=model.drop_rate,
        device=weight.device,
        dtype=weight.dtype,
    )
    plain = SparseResNet(**args) if depth == 1 else DepthNestedSparseResNet(levels=depth, **args)
    shapes = {key: value.shape for key, value in plain.state_dict().items()}
    heads = {schedule.depth(t): t for t in range(1, stage + 1) if schedule.width(t) == width}  # level -> stage
    mapped: dict[str, Tensor] = {}
    for key, value in _nested_tensors(model).items():
        parts = key.split(".")
        if parts[0] == "fc":
            stage_of_head = int(parts[1]) + 1
            level = schedule.depth(stage_of_head)
            if heads.get(level) != stage_of_head:
                continue
            key = ".".join(["fc", str(level - 1), *parts[2:]])
        target = _depth_key(model, key, depth)
        if target is not None:
            mapped[target] = _prefix(value, shapes[target]).clone()
    missing, unexpected = plain.load_state_dict(mapped, strict=False)
    if unexpected or not all(k.startswith("fc.") for k in missing):
        raise RuntimeError(f"extract_stage({stage}) could not map the weights: {missing=} {unexpected=}")
    plain.pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    return plain.train(model.training)
