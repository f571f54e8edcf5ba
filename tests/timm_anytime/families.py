"""One registered anytime model of every family, with the input size its tests use: shared by the
tests that must hold for each family (anytime inference, export)."""

ANYTIME_FAMILIES: list[tuple[str, int]] = [
    ("anytime_cifar_resnet20_w124", 32),
    ("anytime_cifar_resnet20_e1234", 32),
    ("anytime_cifar_sparse_resnet26_d124", 32),
    ("anytime_cifar_sparse_resnet50_wd_alt", 32),
    ("anytime_cifar_sparse_resnet50_wd_sim", 32),
    ("eann_cifar_sparse_resnet50", 32),
    ("anytime_resnet18_w124", 64),
]
