import torch

from effattn import effective_attention, original_code_effective_attention
from tests.test_effective import padded_batch


def test_original_code_agrees_with_exact_on_an_unpadded_full_rank_example():
    attn, values, mask = padded_batch([48], heads=2)
    assert torch.allclose(original_code_effective_attention(attn, values, mask),
                          effective_attention(attn, values, mask), atol=1e-10)


def test_original_code_breaks_the_identity_on_a_short_padded_example():
    # A 20-token example padded to 48: n < d_head, so the true A_eff is A (METHODS.md §1)
    attn, values, mask = padded_batch([48, 20], heads=2, dtype=torch.float32)
    original = original_code_effective_attention(attn, values, mask)
    real = mask[:, None, :, None].float()
    output = (attn * real) @ values
    identity_error = ((original * real) @ values - output)[1].abs().max() / output[1].abs().max()
    assert identity_error > 1e-2
    assert (original[1, :, :20, :20] - attn[1, :, :20, :20]).abs().max() > 1e-2
