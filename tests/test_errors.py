"""Errors follow PyTorch's types and texts. Each case states the message; the engine must raise it
exactly, and (with torch installed) torch must too, so that the stated texts are torch's."""
import re
import warnings

import numpy as np
import pytest

import gradviz.engine as gt

BROADCAST_3_4 = "The size of tensor a (3) must match the size of tensor b (4) at non-singleton dimension 1"


def Z(L, *shape, **kw):
    return L.zeros(*shape, **kw)


def F(L):
    return L.nn.functional


CASES = [
    # matrix products
    ("mm", lambda L: Z(L, 3, 4).mm(Z(L, 5, 6)), RuntimeError,
     "mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6)"),
    ("matmul_2d", lambda L: Z(L, 3, 4) @ Z(L, 5, 6), RuntimeError,
     "mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6)"),
    ("torch_matmul", lambda L: L.matmul(Z(L, 3, 4), Z(L, 5, 6)), RuntimeError,
     "mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6)"),
    ("matmul_1d_2d", lambda L: Z(L, 3) @ Z(L, 5, 6), RuntimeError,
     "mat1 and mat2 shapes cannot be multiplied (1x3 and 5x6)"),
    ("matmul_3d_2d_folded", lambda L: Z(L, 2, 3, 4) @ Z(L, 5, 6), RuntimeError,
     "mat1 and mat2 shapes cannot be multiplied (6x4 and 5x6)"),
    ("matmul_3d_2d_grad", lambda L: Z(L, 2, 3, 4) @ Z(L, 5, 6, requires_grad=True), RuntimeError,
     "mat1 and mat2 shapes cannot be multiplied (6x4 and 5x6)"),
    ("matmul_3d_1d", lambda L: Z(L, 2, 3, 4) @ Z(L, 5), RuntimeError,
     "size mismatch, got input (6), mat (6x4), vec (5)"),
    ("matmul_batched", lambda L: Z(L, 2, 3, 4) @ Z(L, 2, 5, 6), RuntimeError,
     "Expected size for first two dimensions of batch2 tensor to be: [2, 4] but got: [2, 5]."),
    ("matmul_batch_broadcast", lambda L: Z(L, 2, 3, 4) @ Z(L, 3, 4, 5), RuntimeError,
     "The size of tensor a (2) must match the size of tensor b (3) at non-singleton dimension 0"),
    ("matmul_0d", lambda L: L.tensor(1.0) @ Z(L, 3), RuntimeError,
     "both arguments to matmul need to be at least 1D, but they are 0D and 1D"),
    ("mm_not_matrix", lambda L: Z(L, 2, 3, 4).mm(Z(L, 4, 5)), RuntimeError, "self must be a matrix"),
    ("mm_dtype", lambda L: Z(L, 3, 4).mm(Z(L, 4, 2, dtype=L.float64)), RuntimeError,
     "expected m1 and m2 to have the same dtype, but got: float != double"),
    ("mm_dtype_long", lambda L: Z(L, 3, 4).mm(Z(L, 4, 2, dtype=L.int64)), RuntimeError,
     "expected m1 and m2 to have the same dtype, but got: float != long int"),
    ("bmm", lambda L: Z(L, 2, 3, 4).bmm(Z(L, 2, 5, 6)), RuntimeError,
     "Expected size for first two dimensions of batch2 tensor to be: [2, 4] but got: [2, 5]."),
    ("bmm_batch", lambda L: L.bmm(Z(L, 2, 3, 4), Z(L, 3, 4, 6)), RuntimeError,
     "Expected size for first two dimensions of batch2 tensor to be: [2, 4] but got: [3, 4]."),
    ("bmm_2d", lambda L: Z(L, 3, 4).bmm(Z(L, 2, 4, 6)), RuntimeError, "batch1 must be a 3D tensor"),
    ("bmm_dtype", lambda L: Z(L, 2, 3, 4, dtype=L.float64).bmm(Z(L, 2, 4, 2)), RuntimeError,
     "expected scalar type Double but found Float"),
    ("mv", lambda L: Z(L, 3, 4).mv(Z(L, 5)), RuntimeError, "size mismatch, got input (3), mat (3x4), vec (5)"),
    ("matmul_mv", lambda L: Z(L, 3, 4) @ Z(L, 5), RuntimeError, "size mismatch, got input (3), mat (3x4), vec (5)"),
    ("mv_dims", lambda L: Z(L, 3, 4).mv(Z(L, 4, 2)), RuntimeError, "vector + matrix @ vector expected, got 1, 2, 2"),
    ("mv_dtype", lambda L: Z(L, 3, 4).mv(Z(L, 4, dtype=L.float64)), RuntimeError,
     "addmv input tensors must have the same dtype, but got Double, Float, and Double"),
    ("dot", lambda L: Z(L, 3).dot(Z(L, 4)), RuntimeError,
     "inconsistent tensor size, expected tensor [3] and src [4] to have the same number of elements, but got 3 "
     "and 4 elements respectively"),
    ("matmul_dot", lambda L: Z(L, 3) @ Z(L, 4), RuntimeError,
     "inconsistent tensor size, expected tensor [3] and src [4] to have the same number of elements, but got 3 "
     "and 4 elements respectively"),
    ("dot_2d", lambda L: L.dot(Z(L, 3, 4), Z(L, 4)), RuntimeError, "1D tensors expected, but got 2D and 1D tensors"),
    ("dot_dtype", lambda L: Z(L, 3, dtype=L.int64).dot(Z(L, 3)), RuntimeError,
     "dot : expected both vectors to have same dtype, but found Long and Float"),
    ("linear", lambda L: F(L).linear(Z(L, 2, 3), Z(L, 4, 5), Z(L, 4)), RuntimeError,
     "mat1 and mat2 shapes cannot be multiplied (2x3 and 5x4)"),
    ("linear_dtype", lambda L: F(L).linear(Z(L, 1, 5, dtype=L.float64), Z(L, 2, 5), Z(L, 2)), RuntimeError,
     "mat1 and mat2 must have the same dtype, but got Double and Float"),
    ("linear_dtype_long", lambda L: F(L).linear(Z(L, 1, 5, dtype=L.int64), Z(L, 2, 5), Z(L, 2)), RuntimeError,
     "mat1 and mat2 must have the same dtype, but got Long and Float"),
    ("linear_dtype_3d", lambda L: F(L).linear(Z(L, 2, 1, 5, dtype=L.float64), Z(L, 2, 5), Z(L, 2)), RuntimeError,
     "mat1 and mat2 must have the same dtype, but got Double and Float"),
    ("linear_dtype_bias", lambda L: F(L).linear(Z(L, 1, 5), Z(L, 2, 5), Z(L, 2, dtype=L.float64)), RuntimeError,
     "self and mat2 must have the same dtype, but got Double and Float"),
    ("linear_3d", lambda L: F(L).linear(Z(L, 2, 2, 3), Z(L, 4, 5), Z(L, 4)), RuntimeError,
     "mat1 and mat2 shapes cannot be multiplied (4x3 and 5x4)"),
    # broadcasting
    ("add", lambda L: Z(L, 2, 3) + Z(L, 2, 4), RuntimeError, BROADCAST_3_4),
    ("add_requires_grad", lambda L: Z(L, 2, 3, requires_grad=True) + Z(L, 2, 4), RuntimeError, BROADCAST_3_4),
    ("add_3d", lambda L: Z(L, 3, 1, 4) + Z(L, 2, 5), RuntimeError,
     "The size of tensor a (4) must match the size of tensor b (5) at non-singleton dimension 2"),
    ("sub", lambda L: Z(L, 4) - Z(L, 3), RuntimeError,
     "The size of tensor a (4) must match the size of tensor b (3) at non-singleton dimension 0"),
    ("mul", lambda L: Z(L, 2, 3) * Z(L, 3, 2), RuntimeError,
     "The size of tensor a (3) must match the size of tensor b (2) at non-singleton dimension 1"),
    ("div", lambda L: Z(L, 2, 3) / Z(L, 4, 1, 2), RuntimeError,
     "The size of tensor a (3) must match the size of tensor b (2) at non-singleton dimension 2"),
    ("pow", lambda L: Z(L, 2, 3) ** Z(L, 4), RuntimeError, BROADCAST_3_4),
    ("maximum", lambda L: L.maximum(Z(L, 2, 3), Z(L, 4)), RuntimeError, BROADCAST_3_4),
    ("where", lambda L: L.where(Z(L, 2, 3) > 0, Z(L, 2, 3), Z(L, 4)), RuntimeError, BROADCAST_3_4),
    ("lt", lambda L: Z(L, 2, 3) < Z(L, 2, 4), RuntimeError, BROADCAST_3_4),
    ("eq", lambda L: Z(L, 2, 3) == Z(L, 5), RuntimeError,
     "The size of tensor a (3) must match the size of tensor b (5) at non-singleton dimension 1"),
    # views and reshapes
    ("view_noncontiguous", lambda L: Z(L, 3, 4).t().view(12), RuntimeError,
     "view size is not compatible with input tensor's size and stride (at least one dimension spans across two "
     "contiguous subspaces). Use .reshape(...) instead."),
    ("view_bad_shape", lambda L: Z(L, 3, 4).view(5, 2), RuntimeError, "shape '[5, 2]' is invalid for input of size 12"),
    ("view_bad_infer", lambda L: Z(L, 3, 4).view(-1, 5), RuntimeError,
     "shape '[-1, 5]' is invalid for input of size 12"),
    ("view_two_infer", lambda L: Z(L, 3, 4).view(-1, -1), RuntimeError, "only one dimension can be inferred"),
    ("reshape_bad_shape", lambda L: Z(L, 3, 4).reshape(5, 5), RuntimeError,
     "shape '[5, 5]' is invalid for input of size 12"),
    ("reshape_bad_infer", lambda L: Z(L, 3, 4).t().reshape(-1, 7), RuntimeError,
     "shape '[-1, 7]' is invalid for input of size 12"),
    ("expand", lambda L: Z(L, 3).expand(2, 5), RuntimeError,
     "The expanded size of the tensor (5) must match the existing size (3) at non-singleton dimension 1.  "
     "Target sizes: [2, 5].  Tensor sizes: [3]"),
    ("expand_middle", lambda L: Z(L, 2, 3, 1).expand(2, 4, 5), RuntimeError,
     "The expanded size of the tensor (4) must match the existing size (3) at non-singleton dimension 1.  "
     "Target sizes: [2, 4, 5].  Tensor sizes: [2, 3, 1]"),
    ("expand_fewer_dims", lambda L: Z(L, 2, 3).expand(3), RuntimeError,
     "expand(torch.FloatTensor{[2, 3]}, size=[3]): the number of sizes provided (1) must be greater or equal to "
     "the number of dimensions in the tensor (2)"),
    ("transpose_dim", lambda L: Z(L, 3, 4).transpose(0, 2), IndexError,
     "Dimension out of range (expected to be in range of [-2, 1], but got 2)"),
    ("permute_len", lambda L: Z(L, 3, 4).permute(0), RuntimeError,
     "permute(sparse_coo): number of dimensions in the tensor input does not match the length of the desired "
     "ordering of dimensions i.e. input.dim() = 2 is not equal to len(dims) = 1"),
    ("permute_duplicate", lambda L: Z(L, 3, 4).permute(0, 0), RuntimeError,
     "permute(): duplicate dims are not allowed."),
    ("permute_dim", lambda L: Z(L, 3, 4).permute(0, 2), IndexError,
     "Dimension out of range (expected to be in range of [-2, 1], but got 2)"),
    ("unsqueeze_dim", lambda L: Z(L, 3, 4).unsqueeze(3), IndexError,
     "Dimension out of range (expected to be in range of [-3, 2], but got 3)"),
    ("unsqueeze_neg_dim", lambda L: Z(L, 3, 4).unsqueeze(-4), IndexError,
     "Dimension out of range (expected to be in range of [-3, 2], but got -4)"),
    ("squeeze_dim", lambda L: Z(L, 3, 4).squeeze(2), IndexError,
     "Dimension out of range (expected to be in range of [-2, 1], but got 2)"),
    ("t_3d", lambda L: Z(L, 2, 3, 4).t(), RuntimeError, "t() expects a tensor with <= 2 dimensions, but self is 3D"),
    ("flatten_order", lambda L: Z(L, 2, 3, 4).flatten(2, 1), RuntimeError,
     "flatten() has invalid args: start_dim cannot come after end_dim"),
    ("flatten_dim", lambda L: Z(L, 2, 3).flatten(0, 2), IndexError,
     "Dimension out of range (expected to be in range of [-2, 1], but got 2)"),
    ("flatten_0d", lambda L: L.tensor(3.0).flatten(1), IndexError,
     "Dimension out of range (expected to be in range of [-1, 0], but got 1)"),
    # cat / stack
    ("cat_sizes", lambda L: L.cat([Z(L, 2, 3), Z(L, 2, 4)]), RuntimeError,
     "Sizes of tensors must match except in dimension 0. Expected size 3 but got size 4 for tensor number 1 in "
     "the list."),
    ("cat_sizes_dim1", lambda L: L.cat([Z(L, 2, 3), Z(L, 2, 3), Z(L, 3, 3)], 1), RuntimeError,
     "Sizes of tensors must match except in dimension 1. Expected size 2 but got size 3 for tensor number 2 in "
     "the list."),
    ("cat_ndim", lambda L: L.cat([Z(L, 2, 3), Z(L, 3)]), RuntimeError,
     "Tensors must have same number of dimensions: got 2 and 1"),
    ("cat_empty", lambda L: L.cat([]), ValueError, "torch.cat(): expected a non-empty list of Tensors"),
    ("cat_dim", lambda L: L.cat([Z(L, 2, 3), Z(L, 2, 3)], 2), IndexError,
     "Dimension out of range (expected to be in range of [-2, 1], but got 2)"),
    ("stack", lambda L: L.stack([Z(L, 2, 3), Z(L, 2, 4)]), RuntimeError,
     "stack expects each tensor to be equal size, but got [2, 3] at entry 0 and [2, 4] at entry 1"),
    ("stack_third", lambda L: L.stack([Z(L, 2, 3), Z(L, 2, 3), Z(L, 3, 2)], 1), RuntimeError,
     "stack expects each tensor to be equal size, but got [2, 3] at entry 0 and [3, 2] at entry 2"),
    ("stack_empty", lambda L: L.stack([]), RuntimeError, "stack expects a non-empty TensorList"),
    ("stack_dim", lambda L: L.stack([Z(L, 2, 3)], -4), IndexError,
     "Dimension out of range (expected to be in range of [-3, 2], but got -4)"),
    # indexing
    ("index_int", lambda L: Z(L, 3, 4)[3], IndexError, "index 3 is out of bounds for dimension 0 with size 3"),
    ("index_negative", lambda L: Z(L, 3, 4)[-4], IndexError, "index -4 is out of bounds for dimension 0 with size 3"),
    ("index_column", lambda L: Z(L, 3, 4)[:, 4], IndexError, "index 4 is out of bounds for dimension 1 with size 4"),
    ("index_tensor", lambda L: Z(L, 3, 4)[L.tensor([0, 5])], IndexError,
     "index 5 is out of bounds for dimension 0 with size 3"),
    ("index_tensor_column", lambda L: Z(L, 3, 4)[:, L.tensor([1, 4])], IndexError,
     "index 4 is out of bounds for dimension 0 with size 4"),
    ("index_tensor_pair", lambda L: Z(L, 3, 4)[L.tensor([0]), L.tensor([9])], IndexError,
     "index 9 is out of bounds for dimension 1 with size 4"),
    ("index_list", lambda L: Z(L, 3, 4)[[0, -7]], IndexError, "index -7 is out of bounds for dimension 0 with size 3"),
    ("index_too_many", lambda L: Z(L, 3, 4)[0, 1, 2], IndexError, "too many indices for tensor of dimension 2"),
    ("index_mask_shape", lambda L: Z(L, 3, 4)[L.ones(4, dtype=L.bool)], IndexError,
     "The shape of the mask [4] at index 0 does not match the shape of the indexed tensor [3, 4] at index 0"),
    ("index_mask_shape_2", lambda L: Z(L, 2, 3, 4)[:, L.ones(3, 5, dtype=L.bool)], IndexError,
     "The shape of the mask [3, 5] at index 1 does not match the shape of the indexed tensor [2, 3, 4] at index 2"),
    ("index_float", lambda L: Z(L, 3, 4)[L.tensor([0.5])], IndexError,
     "tensors used as indices must be long, int, byte or bool tensors"),
    ("index_negative_step", lambda L: Z(L, 3, 4)[::-1], ValueError, "step must be greater than zero"),
    # reductions
    ("sum_dim", lambda L: Z(L, 3, 4).sum(2), IndexError,
     "Dimension out of range (expected to be in range of [-2, 1], but got 2)"),
    ("mean_dim", lambda L: Z(L, 3, 4).mean(-3), IndexError,
     "Dimension out of range (expected to be in range of [-2, 1], but got -3)"),
    ("max_dim", lambda L: Z(L, 3, 4).max(2), IndexError,
     "Dimension out of range (expected to be in range of [-2, 1], but got 2)"),
    ("softmax_dim", lambda L: Z(L, 3, 4).softmax(2), IndexError,
     "Dimension out of range (expected to be in range of [-2, 1], but got 2)"),
    ("mean_int", lambda L: L.tensor([1, 2]).mean(), RuntimeError,
     "mean(): could not infer output dtype. Input dtype must be either a floating point or complex dtype. Got: Long"),
    ("max_empty", lambda L: Z(L, 0).max(), RuntimeError,
     "max(): Expected reduction dim to be specified for input.numel() == 0. Specify the reduction dim with the "
     "'dim' argument."),
    ("clamp_no_bounds", lambda L: Z(L, 3).clamp(), RuntimeError,
     "torch.clamp: At least one of 'min' or 'max' must not be None"),
    # losses
    ("ce_target_out_of_bounds", lambda L: F(L).cross_entropy(Z(L, 4, 3), L.tensor([0, 1, 5, 2])), IndexError,
     "Target 5 is out of bounds."),
    ("ce_target_negative", lambda L: F(L).cross_entropy(Z(L, 4, 3), L.tensor([0, 1, -1, 2])), IndexError,
     "Target -1 is out of bounds."),
    ("ce_batch_size", lambda L: F(L).cross_entropy(Z(L, 4, 3), L.tensor([0, 1, 2])), ValueError,
     "Expected input batch_size (4) to match target batch_size (3)."),
    ("ce_multi_target", lambda L: F(L).cross_entropy(Z(L, 4, 3), Z(L, 4, 2, dtype=L.int64)), RuntimeError,
     "0D or 1D target tensor expected, multi-target not supported"),
    ("ce_float_target", lambda L: F(L).cross_entropy(Z(L, 4, 3), Z(L, 4)), RuntimeError,
     "expected target dtype to be Long or Byte, but got Float"),
    ("ce_float_target_2d", lambda L: F(L).cross_entropy(Z(L, 4, 3), Z(L, 4, 2)), RuntimeError,
     "0D or 1D target tensor expected, multi-target not supported"),
    ("nll_target_out_of_bounds", lambda L: F(L).nll_loss(Z(L, 4, 3), L.tensor([0, 3, 1, 2])), IndexError,
     "Target 3 is out of bounds."),
    ("nll_batch_size", lambda L: F(L).nll_loss(Z(L, 4, 3), L.tensor([0, 1])), ValueError,
     "Expected input batch_size (4) to match target batch_size (2)."),
    ("nll_2d_target_dims", lambda L: F(L).nll_loss(Z(L, 2, 3, 4, 5), Z(L, 2, 4, dtype=L.int64)), RuntimeError,
     "only batches of spatial targets supported (3D tensors) but got targets of dimension: 2"),
    ("nll_2d_target_size", lambda L: F(L).nll_loss(Z(L, 2, 3, 4, 5), Z(L, 2, 4, 6, dtype=L.int64)), RuntimeError,
     "size mismatch (got input: [2, 3, 4, 5] , target: [2, 4, 6]"),
    ("nll_2d_batch", lambda L: F(L).nll_loss(Z(L, 2, 3, 4, 5), Z(L, 3, 4, 5, dtype=L.int64)), ValueError,
     "Expected input batch_size (2) to match target batch_size (3)."),
    ("nll_2d_target_out_of_bounds", lambda L: F(L).nll_loss(Z(L, 2, 3, 4, 5), Z(L, 2, 4, 5, dtype=L.int64) + 5),
     IndexError, "Target 5 is out of bounds."),
    ("ce_3d_target_size", lambda L: F(L).cross_entropy(Z(L, 2, 3, 4), Z(L, 2, 5, dtype=L.int64)), RuntimeError,
     "Expected target size [2, 4], got [2, 5]"),
    ("dropout_p", lambda L: F(L).dropout(Z(L, 3), 1.5), ValueError,
     "dropout probability has to be between 0 and 1, but got 1.5"),
    # conv, pooling, batch norm
    ("conv_channels", lambda L: F(L).conv2d(Z(L, 2, 5, 7, 7), Z(L, 4, 3, 3, 3)), RuntimeError,
     "Given groups=1, weight of size [4, 3, 3, 3], expected input[2, 5, 7, 7] to have 3 channels, but got 5 "
     "channels instead"),
    ("conv_bias", lambda L: F(L).conv2d(Z(L, 2, 3, 7, 7), Z(L, 4, 3, 3, 3), Z(L, 5)), RuntimeError,
     "Given weight of size [4, 3, 3, 3], expected bias to be 1-dimensional with 4 elements, but got bias of size "
     "[5] instead"),
    ("conv_kernel_too_big", lambda L: F(L).conv2d(Z(L, 1, 3, 2, 2), Z(L, 4, 3, 3, 3)), RuntimeError,
     "Calculated padded input size per channel: (2 x 2). Kernel size: (3 x 3). Kernel size can't be greater than "
     "actual input size"),
    ("conv_input_dims", lambda L: F(L).conv2d(Z(L, 7, 7), Z(L, 4, 3, 3, 3)), RuntimeError,
     "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: [7, 7]"),
    ("max_pool_padding", lambda L: F(L).max_pool2d(Z(L, 1, 1, 5, 5), 3, 2, 2), RuntimeError,
     "pad should be at most half of effective kernel size, but got pad=2, kernel_size=3 and dilation=1"),
    ("max_pool_too_small", lambda L: F(L).max_pool2d(Z(L, 1, 1, 2, 2), 3), RuntimeError,
     "Given input size: (1x2x2). Calculated output size: (1x0x0). Output size is too small"),
    ("max_pool_dims", lambda L: F(L).max_pool2d(Z(L, 2, 2), 2), RuntimeError,
     "non-empty 3D or 4D (batch mode) tensor expected for input"),
    ("adaptive_pool_dims", lambda L: F(L).adaptive_avg_pool2d(Z(L, 5, 5), 2), RuntimeError,
     "adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got [5, 5]"),
    ("bn_one_value_per_channel", lambda L: F(L).batch_norm(Z(L, 1, 3), Z(L, 3), L.ones(3), training=True), ValueError,
     "Expected more than 1 value per channel when training, got input size torch.Size([1, 3])"),
    ("bn_running_mean", lambda L: F(L).batch_norm(Z(L, 4, 3), Z(L, 2), L.ones(3), training=True), RuntimeError,
     "running_mean should contain 3 elements not 2"),
    ("bn_weight", lambda L: F(L).batch_norm(Z(L, 4, 3), Z(L, 3), L.ones(3), Z(L, 2), training=True), RuntimeError,
     "weight should contain 3 elements not 2"),
    ("bn_bias", lambda L: F(L).batch_norm(Z(L, 4, 3), Z(L, 3), L.ones(3), L.ones(3), Z(L, 2)), RuntimeError,
     "bias should contain 3 elements not 2"),
    ("bn_eval_no_stats", lambda L: F(L).batch_norm(Z(L, 4, 3), None, None), RuntimeError,
     "running_mean must be defined in evaluation mode"),
    # tensor conversions and autograd entry points
    ("item", lambda L: Z(L, 3, 4).item(), RuntimeError, "a Tensor with 12 elements cannot be converted to Scalar"),
    ("bool", lambda L: bool(Z(L, 3, 4)), RuntimeError, "Boolean value of Tensor with more than one value is ambiguous"),
    ("backward_non_scalar", lambda L: (Z(L, 2, requires_grad=True) * 2).backward(), RuntimeError,
     "grad can be implicitly created only for scalar outputs"),
]


@pytest.mark.parametrize("fn,exc,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_engine_error(fn, exc, message):
    with pytest.raises(exc) as info:
        fn(gt)
    assert type(info.value) is exc
    assert str(info.value) == message


@pytest.mark.parametrize("fn,exc,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_message_is_torchs(fn, exc, message):
    torch = pytest.importorskip("torch")
    with pytest.raises(exc) as info:
        fn(torch)
    assert isinstance(info.value, exc)
    assert str(info.value).split("\n")[0] == message


def test_matmul_error_names_the_shapes_like_torch():
    """The message of the brief, exactly, for a leaf that requires grad too."""
    a = gt.zeros(3, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match=re.escape("mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6)")):
        a @ gt.zeros(5, 6)


def _mse_warning(L):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        F(L).mse_loss(Z(L, 2, 3), Z(L, 3))
    return [(w.category, str(w.message)) for w in caught]


def test_mse_loss_size_mismatch_warns():
    assert _mse_warning(gt) == [(UserWarning, "Using a target size (torch.Size([3])) that is different to the input "
                                 "size (torch.Size([2, 3])). This will likely lead to incorrect results due to "
                                 "broadcasting. Please ensure they have the same size.")]


def test_mse_loss_size_mismatch_warns_as_torch():
    torch = pytest.importorskip("torch")
    assert _mse_warning(gt) == _mse_warning(torch)


def test_failed_op_leaves_no_graph_behind():
    """An error raised in forward must not leave a half-built node on the inputs."""
    a = gt.ones(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError):
        a + gt.ones(2, 4)
    y = (a * 2).sum()
    y.backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.full((2, 3), 2.0, np.float32))
