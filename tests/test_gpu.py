"""The CUDA path: training, autocast, and a GPU checkpoint that samples on the CPU."""

import lightning as L
import pytest
import torch

from torch_charrnn import CharDataModule, CharRNN
from torch_charrnn.rnn.bptt import cross_entropy

pytestmark = pytest.mark.gpu


def test_fit_on_gpu_then_sample_on_cpu(tmp_path):
    data = CharDataModule(max_chars=50_000, batch_size=16, seq_len=50)
    model = CharRNN(data.vocab_size, 64, vocab=data.vocab)
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        max_steps=20,
        gradient_clip_val=5.0,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(model, data)
    assert trainer.strategy.root_device.type == "cuda"  # Lightning moves the model back to the CPU at the end
    path = tmp_path / "gpu.ckpt"
    trainer.save_checkpoint(path)
    cpu = CharRNN.load_from_checkpoint(path, map_location="cpu")
    assert cpu.layers[0].W_hh.device.type == "cpu"
    torch.testing.assert_close(cpu.layers[0].W_hh, model.layers[0].W_hh.cpu())
    text = cpu.sample_text(50, prime="The", generator=torch.Generator().manual_seed(0))
    assert len(text) == 50


def test_bf16_autocast_manual_path_tracks_float32():
    torch.manual_seed(0)
    model = CharRNN(65, 256, whh_scale=0.9, init_std=0.1).cuda()
    x, y = torch.randint(0, 65, (32, 100), device="cuda"), torch.randint(0, 65, (32, 100), device="cuda")
    loss32 = cross_entropy(model(x)[0], y)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, h_last = model(x)
    assert logits.dtype == torch.bfloat16
    loss16 = cross_entropy(logits.float(), y)
    loss16.backward()
    assert (
        model.layers[0].W_hh.grad.dtype == torch.float32 and torch.isfinite(model.layers[0].W_hh.grad).all()
    )
    assert abs(loss16.item() - loss32.item()) < 0.02


def test_sampling_on_gpu_matches_its_own_seed():
    model = CharRNN(30, 64, vocab="".join(chr(ord("a") + i) for i in range(26)) + " .,\n").cuda()
    a = model.sample_text(200, generator=torch.Generator("cuda").manual_seed(3))
    b = model.sample_text(200, generator=torch.Generator("cuda").manual_seed(3))
    assert a == b and len(a) == 200


@pytest.mark.parametrize("cell", ["tanh", "gru", "lstm"])
def test_fused_on_cuda_equals_manual_and_trains_the_models_own_weights(cell):
    """cuDNN's kernels on the model's parameters: the same loss and gradients as the hand-written
    BPTT on the GPU (float64), and the gradients land on the model's own parameters."""
    torch.manual_seed(0)
    x, y = torch.randint(0, 11, (3, 7), device="cuda"), torch.randint(0, 11, (3, 7), device="cuda")
    grads = {}
    for bptt in ("manual", "fused"):
        torch.manual_seed(1)
        model = CharRNN(11, 6, cell=cell, num_layers=2, bptt=bptt).cuda().double()
        loss = cross_entropy(model(x)[0], y)
        loss.backward()
        grads[bptt] = (loss.detach(), {n: p.grad for n, p in model.named_parameters()})
    (m_loss, m_grads), (f_loss, f_grads) = grads["manual"], grads["fused"]
    torch.testing.assert_close(f_loss, m_loss, rtol=1e-10, atol=1e-12)
    assert set(f_grads) == set(m_grads) and all(g is not None for g in f_grads.values())
    for name, g in m_grads.items():
        torch.testing.assert_close(f_grads[name], g, rtol=1e-8, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")
