"""Train the digits CNN on scikit-learn's digits and write data/digits_cnn.npz and data/digits_cnn.json.

    python models_zoo/train_digits.py [--epochs 60] [--seed 0]

Needs PyTorch (training only; the zoo builds the ONNX model from the saved weights without it).
The split is the one ``onnxc.models_zoo.digits.load_split`` gives; the accuracy recorded is
measured on ONNX Runtime with the model the zoo builds from the weights just written.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from torch import nn

from onnxc.models_zoo import digits


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        for conv_name, bn_name, cin, cout, stride in digits.CONV_LAYERS:
            setattr(self, conv_name, nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False))
            setattr(self, bn_name, nn.BatchNorm2d(cout, eps=digits.BN_EPS, momentum=0.1))
        self.fc = nn.Linear(32 * 4 * 4, digits.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv_name, bn_name, *_ in digits.CONV_LAYERS:
            x = torch.relu(getattr(self, bn_name)(getattr(self, conv_name)(x)))
        return self.fc(torch.flatten(x, 1))


def train(epochs: int, seed: int, batch_size: int = 64) -> tuple[DigitsCNN, dict]:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    x_raw, y = digits.raw_split("train")
    mean, std = float(x_raw.mean()), float(x_raw.std())
    x = torch.from_numpy(digits.normalize(x_raw, mean, std))
    labels = torch.from_numpy(y.copy())
    model = DigitsCNN()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(x), generator=order).split(batch_size):
            # One-pixel random shifts: the 8x8 digits are not centred alike.
            shift = [int(s) for s in torch.randint(-1, 2, (2,), generator=order)]
            inputs = torch.roll(x[batch], shifts=shift, dims=(2, 3))
            loss = nn.functional.cross_entropy(model(inputs), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    model.eval()
    return model, {"mean": mean, "std": std}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, normalization = train(args.epochs, args.seed)
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items() if "num_batches" not in k}
    digits.DATA_DIR.mkdir(exist_ok=True)
    np.savez(digits.WEIGHTS_PATH, **state)
    record = {
        "split": digits.split_definition(),
        "normalization": normalization,
        "training": {"epochs": args.epochs, "seed": args.seed, "optimizer": "AdamW lr 3e-3 cosine, batch 64, +-1 pixel shifts"},
    }
    with open(digits.RECORD_PATH, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    record["test_accuracy"] = digits.evaluate(digits.build_digits(), "test")
    record["test_samples"] = len(digits.raw_split("test")[1])
    with open(digits.RECORD_PATH, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    print(f"test accuracy {record['test_accuracy']:.4f} on {record['test_samples']} held-out digits")


if __name__ == "__main__":
    main()
