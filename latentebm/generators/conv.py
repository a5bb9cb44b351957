"""ConvTranspose image generator ``p_beta(x | z) = N(g_beta(z), tau^2 I)`` (eq. 1 of Pang, Han,
Nijkamp, Zhu and Wu (2020), "Learning Latent Space Energy-Based Prior Model").

``g_beta`` maps ``z (B, d)``, viewed as a ``1 x 1`` feature map with ``d`` channels, through
transposed convolutions to an image in ``[-1, 1]`` (final ``tanh``). Architectures (Pang et al.
2020, Table 6; "convT(n)" is a transposed convolution with n output maps, stride as in the table):

* ``svhn32`` (SVHN, ngf 64): ``4x4 convT(8 ngf)`` s1 -> 4x4, ``4x4 convT(4 ngf)`` s2 -> 8x8,
  ``4x4 convT(2 ngf)`` s2 -> 16x16, ``4x4 convT(C)`` s2 -> 32x32, tanh;
* ``cifar32`` (CIFAR-10, ngf 128, z 128): ``8x8 convT(8 ngf)`` s1 -> 8x8, ``4x4 convT(4 ngf)``
  s2 -> 16x16, ``4x4 convT(2 ngf)`` s2 -> 32x32, ``3x3 convT(C)`` s1 (padding 1) -> 32x32, tanh;
* ``celeba64`` (CelebA 64x64): as ``svhn32`` with one more ``4x4 convT(ngf)`` s2 layer
  (4 -> 8 -> 16 -> 32 -> 64);
* ``mnist28`` (not in the paper; our choice for 28x28 MNIST, DCGAN-style and half the depth of
  ``svhn32``): ``7x7 convT(2 ngf)`` s1 -> 7x7, ``4x4 convT(ngf)`` s2 -> 14x14,
  ``4x4 convT(C)`` s2 -> 28x28, tanh.

Padding is 0 for the first layer and 1 for the others. A LeakyReLU follows every hidden layer:
slope 0.2 by default, as in the authors' code (``train_svhn.py``: ``g_activation='lrelu'`` built
with ``e_activation_leak=0.2``); Table 6's caption says 0.1 (``negative_slope: 0.1``). Batch
normalisation is off, as in Table 6 and the reference code (``g_batchnorm=False``); with it on, a
``BatchNorm2d`` follows each hidden transposed convolution (then without bias), and an image's
likelihood depends on the rest of its batch in training mode.

Weights of the transposed convolutions start from Xavier normal (appendix B.1); biases keep
PyTorch's default initialisation and BatchNorm scales start from N(1, 0.02), as in the
reference ``weights_init_xavier``.

The likelihood is the normalised Gaussian density with standard deviation ``tau``
(``likelihood_sigma``, 0.3 in the reference code, ``g_llhd_sigma``), summed over the
``D = C H W`` pixels (:class:`~latentebm.generators.gaussian_image.GaussianImageGenerator`, which
every Gaussian image generator shares)::

    log p_beta(x | z) = -||x - g_beta(z)||^2 / (2 tau^2) - (D / 2) log(2 pi tau^2)

The CPU path (``fast_path: true``, the default). Almost all of a learning iteration of Algorithm
1 is the posterior chain's K1 evaluations of ``grad_z log p_beta(x | z)`` (eq. 9): one forward
of ``g_beta`` and one backward to ``z``, with the weights frozen. On a CPU in float32,
``g_beta`` is computed with the same mathematics, arranged for oneDNN:

* activations in channels-last (NHWC) memory format, where oneDNN's transposed convolutions
  are faster and need no layout conversions between layers;
* the first layer, a transposed convolution of a ``1 x 1`` map with stride 1 and no padding,
  as the matrix product it is: ``z W + b`` with ``W`` of shape ``(d, k k C1)``;
* the last layer (3 or 1 output maps, where oneDNN's transposed convolution is slow) as a
  matrix product to ``k k C`` columns per input pixel, summed into the image by ``fold``
  (col2im);
* when no weight needs a gradient (inside the chains, :func:`latentebm.langevin.frozen`, or
  under ``torch.no_grad``): one autograd node for all of ``g_beta``, whose hidden layers are
  oneDNN transposed convolutions with the LeakyReLU fused and the weights packed in oneDNN's
  own layout (once per frozen window, i.e. once per chain), and whose backward applies the
  adjoint of each layer (a strided convolution with the same weights) and the LeakyReLU and
  tanh derivatives in place.

Values and gradients equal the plain ``nn.Sequential`` path up to float rounding (sums are
taken in another order; ``tests/test_conv_generator.py`` checks this); the parameters and the
state dict are the same. Other devices and dtypes, and ``torch.compile``, take the plain path.
With batch normalisation the fused node is not used (the channels-last path still is). The
fused node is differentiable once (to ``z``): for second derivatives set ``fast_path: false``.
The packed weights of the last window stay cached (about twice the size of the weights).

At the SVHN settings (batch 100, ngf 64, K1 = 20) on one core of an AMD EPYC (Zen 4), a
posterior step takes about 0.8x the time of the plain path and a learning iteration about
0.8x (``benchmarks/train_step.py --preset svhn --compare-plain-path``); what remains is the
hidden layers' convolutions, which oneDNN runs near the core's float32 peak.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from latentebm.config import check_fields, checked_field, non_negative, positive
from latentebm.generators.gaussian_image import GaussianImageGenerator
from latentebm.langevin import frozen_window

__all__ = ["ARCHITECTURES", "ConvGenerator"]

ARCHITECTURES: dict[str, tuple[int, tuple[tuple[int, int, int, int], ...]]] = {
    # name: (image side, ((kernel, stride, padding, channel factor), ...)); factor 0 = image C
    "mnist28": (28, ((7, 1, 0, 2), (4, 2, 1, 1), (4, 2, 1, 0))),
    "svhn32": (32, ((4, 1, 0, 8), (4, 2, 1, 4), (4, 2, 1, 2), (4, 2, 1, 0))),
    "cifar32": (32, ((8, 1, 0, 8), (4, 2, 1, 4), (4, 2, 1, 2), (3, 1, 1, 0))),
    "celeba64": (64, ((4, 1, 0, 8), (4, 2, 1, 4), (4, 2, 1, 2), (4, 2, 1, 1), (4, 2, 1, 0))),
}
"""Layer plans: each transposed convolution's kernel, stride, padding and output channels as a
multiple of ``ngf`` (0: the image's channels, the last layer)."""

_AUTO = {28: "mnist28", 32: "svhn32", 64: "celeba64"}
"""``architecture: auto`` by image side (use ``cifar32`` explicitly for Table 6's CIFAR-10)."""


class ConvGenerator(GaussianImageGenerator):
    """Gaussian image generator ``x = g_beta(z) + tau * eps`` with a ConvTranspose ``g_beta``.

    Args:
        config: the recipe's ``model.generator`` section.
        z_dim: dimension of z (Table 6: 100; 128 for CIFAR-10).
        image_shape: ``(C, H, W)`` of the task's images (``task.generator_kwargs()``).
    """

    @dataclass
    class Config:
        ngf: int = checked_field(64, check=positive)
        """Channel factor of the generator (Table 6: 64 for SVHN and CelebA, 128 for CIFAR-10)."""
        architecture: Literal["auto", "mnist28", "svhn32", "cifar32", "celeba64"] = "auto"
        """Layer plan (module docstring); ``auto`` picks by the image side: 28 -> mnist28,
        32 -> svhn32, 64 -> celeba64."""
        likelihood_sigma: float = checked_field(0.3, check=positive)
        """tau, the standard deviation of ``p_beta(x | z)`` (0.3 in the reference code)."""
        negative_slope: float = checked_field(0.2, check=non_negative)
        """LeakyReLU slope between layers (reference code 0.2; Table 6's caption says 0.1)."""
        batch_norm: bool = False
        """BatchNorm2d after each hidden transposed convolution (off in Table 6)."""
        init: Literal["xavier_normal", "default"] = "xavier_normal"
        """Weight initialisation of the transposed convolutions (appendix B.1: Xavier normal)."""
        fast_path: bool = True
        """On a CPU in float32, compute ``g_beta`` in the faster arrangement of the module
        docstring (channels-last, first and last layers as matrix products, one fused node in
        the chains); the same values and gradients up to float rounding. False: always the plain
        ``nn.Sequential`` forward, as in the reference code."""

        def __post_init__(self) -> None:
            check_fields(self)  # ngf, likelihood_sigma, negative_slope
            if self.architecture not in ("auto", *ARCHITECTURES):
                raise ValueError(
                    f"generator.architecture must be 'auto' or one of {list(ARCHITECTURES)}, "
                    f"got {self.architecture!r}"
                )
            if self.init not in ("xavier_normal", "default"):
                raise ValueError(
                    f"generator.init must be 'xavier_normal' or 'default', got {self.init!r}"
                )

    def __init__(
        self, config: ConvGenerator.Config, *, z_dim: int, image_shape: tuple[int, int, int]
    ) -> None:
        super().__init__()
        if z_dim < 1:
            raise ValueError(f"the image generator needs z_dim >= 1, got {z_dim}")
        channels, height, width = (int(s) for s in image_shape)
        if height != width:
            raise ValueError(f"the image generator needs square images, got {image_shape}")
        name = config.architecture
        if name == "auto":
            if height not in _AUTO:
                raise ValueError(
                    f"generator.architecture auto: no architecture for {height}x{width} images "
                    f"(sides {sorted(_AUTO)}); resize the images (task.image_size)"
                )
            name = _AUTO[height]
        side, plan = ARCHITECTURES[name]
        if side != height:
            raise ValueError(
                f"generator.architecture {name!r} makes {side}x{side} images, the task's are "
                f"{height}x{width}"
            )
        self.config = config
        self.z_dim = z_dim
        self.image_shape = (channels, height, width)
        self.architecture = name
        layers: list[nn.Module] = []
        in_channels = z_dim
        for i, (kernel, stride, padding, factor) in enumerate(plan):
            last = i == len(plan) - 1
            out_channels = channels if last else config.ngf * factor
            bias = last or not config.batch_norm
            layers.append(
                nn.ConvTranspose2d(in_channels, out_channels, kernel, stride, padding, bias=bias)
            )
            if last:
                layers.append(nn.Tanh())
            else:
                if config.batch_norm:
                    layers.append(nn.BatchNorm2d(out_channels))
                layers.append(nn.LeakyReLU(config.negative_slope))
            in_channels = out_channels
        self.net = nn.Sequential(*layers)
        self._convs = [m for m in layers if isinstance(m, nn.ConvTranspose2d)]
        # the first layer maps the 1x1 input to a k x k map: a matrix product (every plan)
        self._first_is_linear = plan[0][1] == 1 and plan[0][2] == 0
        self._packed = _PackCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal transposed-convolution weights (``init: xavier_normal``); BatchNorm
        scales from N(1, 0.02) and shifts 0 (the reference ``weights_init_xavier``)."""
        for module in self.net:
            if isinstance(module, nn.ConvTranspose2d):
                module.reset_parameters()
                if self.config.init == "xavier_normal":
                    nn.init.xavier_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def mean(self, z: Tensor) -> Tensor:
        """``g_beta(z)``: images ``(B, C, H, W)`` in ``[-1, 1]`` for ``z (B, d)``."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"expected z of shape (B, {self.z_dim}), got {tuple(z.shape)}")
        if self._use_fast_path(z):
            packed = self._frozen_weights(z.shape[0])
            if packed is not None:
                return _FrozenMean.apply(z, packed)
            return self._channels_last_mean(z)
        return self.plain_mean(z)

    def plain_mean(self, z: Tensor) -> Tensor:
        """``g_beta(z)`` by the plain ``nn.Sequential`` forward (NCHW), whatever ``fast_path``
        says: the reference for the faster path."""
        return self.net(z[:, :, None, None])

    # ------------------------------------------------------------------------ the CPU path
    def _use_fast_path(self, z: Tensor) -> bool:
        """The faster arrangement applies: CPU, float32 input and weights, not being traced."""
        if not self.config.fast_path or z.device.type != "cpu" or z.dtype != torch.float32:
            return False
        if torch.compiler.is_compiling() or not self._first_is_linear:
            return False
        return all(
            c.weight.dtype == torch.float32 and c.weight.device.type == "cpu" for c in self._convs
        )

    def _channels_last_mean(self, z: Tensor) -> Tensor:
        """``g_beta(z)`` through autograd (weights may need gradients): the first layer as a
        matrix product giving an NHWC map, the hidden layers in NHWC, the last as a matrix
        product + ``fold``."""
        first, last = self._convs[0], self._convs[-1]
        k = first.kernel_size[0]
        weight = first.weight.permute(0, 2, 3, 1).reshape(self.z_dim, -1)  # (d, k k C1)
        bias = first.bias.repeat(k * k) if first.bias is not None else None
        h = z @ weight if bias is None else torch.addmm(bias, z, weight)
        h = h.view(z.shape[0], k, k, -1).permute(0, 3, 1, 2)  # NCHW shape, NHWC memory
        for module in self.net[1:]:
            if module is last:
                h = _fold_transposed(h, last.weight.flatten(1), last)
                if last.bias is not None:
                    h = h + last.bias.view(1, -1, 1, 1)
            else:
                h = module(h)
        return h

    def _frozen_weights(self, batch: int) -> _Packed | None:
        """The weights packed for :class:`_FrozenMean`, or None where it does not apply (a
        weight needs a gradient, batch normalisation, no oneDNN). Inside a
        :func:`~latentebm.langevin.frozen` window they are packed once and reused."""
        if self.config.batch_norm or not _mkldnn_usable():
            return None
        params = list(self.parameters())
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return None
        window = frozen_window()
        if window is None or any(p.requires_grad for p in params):
            return self._pack(batch)  # weights may change between calls: pack afresh
        key = (window, batch, tuple((p.data_ptr(), p._version) for p in params))
        return self._packed.get(key, lambda: self._pack(batch))

    def _pack(self, batch: int) -> _Packed:
        """Weights in the layouts :class:`_FrozenMean` uses (copies, without gradients)."""
        mkldnn = torch.ops.mkldnn
        first, *hidden, last = self._convs
        k = first.kernel_size[0]
        with torch.no_grad():
            first_weight = first.weight.permute(0, 2, 3, 1).reshape(self.z_dim, -1).contiguous()
            first_bias = (
                first.bias.repeat(k * k)
                if first.bias is not None
                else first_weight.new_zeros(first_weight.shape[1])
            )
            side = k
            forward, backward = [], []
            for conv in (*hidden, last):
                stride, padding = list(conv.stride), list(conv.padding)
                out_side = (side - 1) * stride[0] - 2 * padding[0] + conv.kernel_size[0]
                if conv is not last:
                    forward.append(
                        mkldnn._reorder_convolution_transpose_weight(
                            conv.weight,
                            padding,
                            [0, 0],
                            stride,
                            [1, 1],
                            1,
                            [batch, conv.in_channels, side, side],
                        )
                    )
                # The adjoint of a transposed convolution is the convolution with the same
                # weight (out = in_channels, in = out_channels), stride and padding.
                backward.append(
                    mkldnn._reorder_convolution_weight(
                        conv.weight,
                        padding,
                        stride,
                        [1, 1],
                        1,
                        [batch, conv.out_channels, out_side, out_side],
                    )
                )
                side = out_side
        return _Packed(
            module=self,
            first_weight=first_weight,
            first_bias=first_bias,
            forward=tuple(forward),
            backward=tuple(backward),
            last_weight=last.weight.detach().flatten(1),
        )

    forward = mean


# ------------------------------------------------------------------------------ the CPU path
_MKLDNN_OPS = (
    "_convolution_transpose_pointwise",
    "_convolution_pointwise",
    "_reorder_convolution_transpose_weight",
    "_reorder_convolution_weight",
)


@functools.cache
def _mkldnn_ops_present() -> bool:
    """This build of PyTorch registers the oneDNN operators :class:`_FrozenMean` calls."""
    return torch.backends.mkldnn.is_available() and all(
        hasattr(torch.ops.mkldnn, name) for name in _MKLDNN_OPS
    )


def _mkldnn_usable() -> bool:
    """oneDNN and its operators are built in and not switched off
    (``torch.backends.mkldnn.flags(enabled=False)``)."""
    return _mkldnn_ops_present() and torch.backends.mkldnn.enabled


def _fold_transposed(h: Tensor, weight: Tensor, conv: nn.ConvTranspose2d) -> Tensor:
    """``conv_transpose2d(h, W)`` without bias as a matrix product and ``fold`` (col2im).

    Each input pixel's ``C_in`` vector times ``W`` (``(C_in, C k k)``) gives the ``C k k``
    values it adds to its ``k x k`` output window; ``fold`` sums the windows with the layer's
    stride and crops its padding. Faster than oneDNN's transposed convolution for the few
    output maps of an image layer.
    """
    batch, channels, height, width = h.shape
    k, stride, padding = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    out_h = (height - 1) * stride - 2 * padding + k
    out_w = (width - 1) * stride - 2 * padding + k
    cols = h.permute(0, 2, 3, 1).reshape(batch * height * width, channels) @ weight
    cols = cols.view(batch, height * width, -1).transpose(1, 2)
    return F.fold(cols, (out_h, out_w), kernel_size=k, stride=stride, padding=padding)


class _Packed(NamedTuple):
    """The generator's weights in the layouts of :class:`_FrozenMean` (no gradients)."""

    module: ConvGenerator
    first_weight: Tensor
    """``(d, k k C1)``: the first layer as a matrix, columns in NHWC order."""
    first_bias: Tensor
    """``(k k C1,)``: its bias repeated over the ``k x k`` pixels."""
    forward: tuple[Tensor, ...]
    """oneDNN-packed weights of the hidden transposed convolutions."""
    backward: tuple[Tensor, ...]
    """oneDNN-packed weights of the adjoints (strided convolutions) of all but the first."""
    last_weight: Tensor
    """``(C_in, C k k)``: the last layer as a matrix (for :func:`_fold_transposed`)."""


class _PackCache:
    """One set of packed weights and the key it was made for. Not copied or pickled: a copy of
    the module packs its own."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._value: _Packed | None = None

    def get(self, key: tuple[Any, ...], make: Callable[[], _Packed]) -> _Packed:
        """The set made for ``key``, made with ``make()`` (replacing the old one) if needed."""
        if self._key != key or self._value is None:
            self._key, self._value = None, None  # free the old set before packing the new
            self._value = make()
            self._key = key
        assert self._value is not None
        return self._value

    def __deepcopy__(self, memo: dict[int, Any]) -> _PackCache:
        return _PackCache()

    def __getstate__(self) -> dict[str, Any]:
        return {"_key": None, "_value": None}


class _FrozenMean(torch.autograd.Function):
    """``g_beta(z)`` with frozen weights as one autograd node (the chains' CPU path).

    Forward: the first layer as ``z W + b`` into an NHWC map, LeakyReLU in place; each hidden
    layer a oneDNN transposed convolution with the LeakyReLU fused; the last layer by
    :func:`_fold_transposed`, bias and tanh in place. Backward (to ``z`` only): tanh's
    derivative, then per layer the adjoint convolution and the LeakyReLU derivative (written
    over the incoming gradient, which this node owns), and ``W^T`` for the first layer.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, z: Tensor, packed: _Packed) -> Tensor:  # type: ignore[override]
        mkldnn = torch.ops.mkldnn
        module = packed.module
        first, *hidden, last = module._convs
        slope = module.config.negative_slope
        k = first.kernel_size[0]
        h = torch.addmm(packed.first_bias, z, packed.first_weight)
        h = F.leaky_relu_(h.view(z.shape[0], k, k, -1).permute(0, 3, 1, 2), slope)
        acts = [h]
        for conv, weight in zip(hidden, packed.forward, strict=True):
            h = mkldnn._convolution_transpose_pointwise(
                h,
                weight,
                conv.bias,
                list(conv.padding),
                [0, 0],
                list(conv.stride),
                [1, 1],
                1,
                "leaky_relu",
                [slope],
                None,
            )
            acts.append(h)
        mean = _fold_transposed(h, packed.last_weight, last)
        if last.bias is not None:
            mean.add_(last.bias.view(1, -1, 1, 1))
        mean.tanh_()
        if ctx.needs_input_grad[0]:  # type: ignore[attr-defined]
            ctx.save_for_backward(*acts, mean)
            ctx.packed = packed  # type: ignore[attr-defined]
        return mean

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_mean: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        mkldnn, aten = torch.ops.mkldnn, torch.ops.aten
        packed: _Packed = ctx.packed  # type: ignore[attr-defined]
        *acts, mean = ctx.saved_tensors  # type: ignore[attr-defined]
        module = packed.module
        slope = module.config.negative_slope
        convs = module._convs[1:]
        grad = aten.tanh_backward(grad_mean, mean).contiguous(memory_format=torch.channels_last)
        for i in reversed(range(len(convs))):
            conv = convs[i]
            grad = mkldnn._convolution_pointwise(
                grad,
                packed.backward[i],
                None,
                list(conv.padding),
                list(conv.stride),
                [1, 1],
                1,
                "none",
                [],
                None,
            )
            act = acts[i]  # the input of convs[i]: output of the layer before, after LeakyReLU
            aten.leaky_relu_backward.grad_input(grad, act, slope, True, grad_input=grad)
        grad_z = grad.permute(0, 2, 3, 1).reshape(grad.shape[0], -1) @ packed.first_weight.t()
        return grad_z, None
