"""Fuzzing: mutated models never crash onnxc, hang it, leave files behind or touch the input.

Small valid models are mutated deterministically (byte flips, truncation, protobuf fields dropped,
duplicated, swapped or renumbered, bad dims, dtypes and data lengths, broken external data), and
the real CLI runs ``inspect`` and ``compile`` on each in worker processes limited in memory and
time per case (fuzz_worker.py). Every run must end with exit 0 or 2; exit 2 with exactly one
stderr line and no output or staged file left; exit 0 only with an output that passes the ONNX
checker and loads in ONNX Runtime. The input (and its external data) must be byte-identical after.
"""
import json
import random
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

WORKER = Path(__file__).with_name("fuzz_worker.py")
WORKERS = 2
SEED = 20261202
CASES_PER_FAMILY = {"flip": 80, "truncate": 30, "wire": 100, "tensor": 100, "graph": 60, "external": 60}


def _seed_models() -> dict[str, onnx.ModelProto]:
    rng = np.random.default_rng(0)
    opset = [helper.make_opsetid("", 17)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    small = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"], name="add")], "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")]), opset_imports=opset)
    # W is 2 KiB: above the size at which load maps weights instead of parsing them.
    mapped = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
         helper.make_node("Relu", ["a"], ["y"])], "mapped", [x], [y],
        [numpy_helper.from_array(rng.standard_normal((64, 8)).astype(np.float32), "W"),
         numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")]), opset_imports=opset)
    branch = lambda name, value: helper.make_graph(  # noqa: E731
        [helper.make_node("Identity", [f"{name}_c"], [f"{name}_out"])], name, [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [8])],
        [numpy_helper.from_array(np.full(8, value, np.float32), f"{name}_c")])
    nested = helper.make_model(helper.make_graph(
        [helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([1, 8], np.int64))),
         helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(rng.standard_normal((64, 8)).astype(np.float32))),
         helper.make_node("If", ["cond"], ["branch"], then_branch=branch("then", 1.0), else_branch=branch("else", -1.0)),
         helper.make_node("Reshape", ["branch", "shape"], ["r"]), helper.make_node("MatMul", ["x", "k"], ["m"]),
         helper.make_node("Add", ["m", "r"], ["y"])], "nested",
        [x, helper.make_tensor_value_info("cond", TensorProto.BOOL, [])], [y]), opset_imports=opset)
    return {"small": small, "mapped": mapped, "nested": nested}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return result, pos
        shift += 7


def _wire_fields(data: bytes) -> list[tuple[int, int, bytes]]:
    """(field number, wire type, value bytes as on the wire after the tag) of a well-formed message."""
    fields, pos = [], 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        start = pos
        if wire == 0:
            _, pos = _read_varint(data, pos)
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            pos += length
        else:
            pos += 8 if wire == 1 else 4
        fields.append((number, wire, data[start:pos]))
    return fields


def _join(fields: list[tuple[int, int, bytes]]) -> bytes:
    return b"".join(_varint(number << 3 | wire) + value for number, wire, value in fields)


def _mutate_wire(model: onnx.ModelProto, rng: random.Random) -> bytes:
    """Drop, duplicate, swap or renumber a field of the graph, or of one of its nodes or tensors."""
    fields = _wire_fields(model.SerializeToString())
    at = next(i for i, f in enumerate(fields) if f[0] == 7)
    graph_value = fields[at][2]
    _, start = _read_varint(graph_value, 0)
    graph = _wire_fields(graph_value[start:])
    target = graph
    inner_index = None
    if rng.random() < 0.5:
        # One level down: a node (1) or an initializer (5).
        candidates = [i for i, f in enumerate(graph) if f[0] in (1, 5)]
        inner_index = rng.choice(candidates)
        value = graph[inner_index][2]
        _, start = _read_varint(value, 0)
        target = _wire_fields(value[start:])
    action = rng.choice(["drop", "duplicate", "swap", "renumber"])
    i, j = rng.randrange(len(target)), rng.randrange(len(target))
    if action == "drop":
        del target[i]
    elif action == "duplicate":
        target.insert(j, target[i])
    elif action == "swap":
        target[i], target[j] = target[j], target[i]
    else:
        number, wire, value = target[i]
        target[i] = (rng.choice([n for n in range(1, 17) if n != number]), wire, value)
    if inner_index is not None:
        body = _join(target)
        number, wire, _ = graph[inner_index]
        graph[inner_index] = (number, wire, _varint(len(body)) + body)
    body = _join(graph)
    fields[at] = (7, 2, _varint(len(body)) + body)
    return _join(fields)


def _all_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    found = []

    def visit(graph):
        found.extend(graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    found.append(attr.t)
                if attr.HasField("g"):
                    visit(attr.g)

    visit(model.graph)
    return found


def _mutate_tensor(model: onnx.ModelProto, rng: random.Random) -> None:
    tensor = rng.choice(_all_tensors(model))
    action = rng.choice(["dims", "dtype", "raw_length", "typed_field", "string_raw", "valid_dtype"])
    if action == "dims":
        dims = list(tensor.dims)
        choice = rng.choice([[-1] + dims[1:], [2**40, 2**20], [0] + dims, dims + [2], [], [2**62], [d + 1 for d in dims]])
        del tensor.dims[:]
        tensor.dims.extend(choice)
    elif action == "dtype":
        tensor.data_type = rng.choice([0, 999, -1, 8, 2**31 - 1])
    elif action == "valid_dtype":
        tensor.data_type = rng.choice([2, 3, 6, 7, 10, 11, 16, 22])
    elif action == "raw_length":
        raw = tensor.raw_data or numpy_helper.to_array(tensor).tobytes()
        tensor.raw_data = raw[: rng.randrange(len(raw))] if rng.random() < 0.5 else raw + bytes(rng.randrange(1, 9))
    elif action == "typed_field":
        count = int(np.prod(tensor.dims))
        tensor.ClearField("raw_data")
        getattr(tensor, rng.choice(["float_data", "int64_data", "double_data", "int32_data"])).extend(
            [1] * (count + rng.choice([-1, 0, 1])))
    else:
        tensor.data_type = TensorProto.STRING


def _mutate_graph(model: onnx.ModelProto, rng: random.Random) -> None:
    graph = model.graph
    node = rng.choice(list(graph.node))
    action = rng.choice(["ghost_input", "op_type", "no_outputs", "duplicate_node", "huge_value_dims",
                         "opset", "ir_version", "drop_output", "attribute_type"])
    if action == "ghost_input" and node.input:
        node.input[rng.randrange(len(node.input))] = "ghost"
    elif action == "op_type":
        node.op_type = rng.choice(["Conv", "NoSuchOp", "Relu", "Gemm", "Loop", ""])
    elif action == "no_outputs":
        graph.ClearField("output")
    elif action == "duplicate_node":
        graph.node.append(node)
    elif action == "huge_value_dims":
        dims = graph.input[0].type.tensor_type.shape.dim
        dims[rng.randrange(len(dims))].dim_value = rng.choice([2**40, 2**62, 0])
    elif action == "opset":
        model.opset_import[0].version = rng.choice([1, 6, 99, 10**6])
    elif action == "ir_version":
        model.ir_version = rng.choice([0, 1, 99])
    elif action == "drop_output":
        del node.output[:]
    else:
        node.attribute.append(helper.make_attribute("axis", rng.choice([1, "text", [1, 2], 1.5])))


def _external_case(folder: Path, model: onnx.ModelProto, rng: random.Random) -> None:
    """``model`` with its MatMul weight in ``w.bin``, then one thing about that data broken."""
    tensor = next(t for t in model.graph.initializer if t.name == "W")
    raw = numpy_helper.to_array(tensor).tobytes()
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entries = {"location": "w.bin", "offset": "16", "length": str(len(raw))}
    data = bytes(16) + raw
    action = rng.choice(["missing", "short", "short_no_length", "nul", "absolute", "escaping", "offset", "length",
                         "folder", "link_out", "valid"])
    if action == "missing":
        entries["location"] = "nope.bin"
    elif action == "short":
        data = data[: rng.randrange(len(data))]
    elif action == "short_no_length":
        del entries["length"]
        data = data[: rng.randrange(len(data))]
    elif action == "nul":
        entries["location"] = "w\0.bin"
    elif action == "absolute":
        entries["location"] = rng.choice(["/etc/passwd", str(folder / "w.bin"), "\\\\server\\share", "C:w.bin"])
    elif action == "escaping":
        entries["location"] = rng.choice(["../w.bin", "sub/../../w.bin", ".."])
    elif action == "offset":
        entries["offset"] = rng.choice(["abc", "-1", "1e3", "99999999", "", " 16", "0x10"])
    elif action == "length":
        entries["length"] = rng.choice(["abc", "-5", "0", str(len(raw) + 4), str(len(raw) - 4)])
    elif action == "folder":
        (folder / "dir.bin").mkdir()
        entries["location"] = "dir.bin"
    elif action == "link_out":
        (folder.parent / f"{folder.name}.secret").write_bytes(data)
        (folder / "link.bin").symlink_to(folder.parent / f"{folder.name}.secret")
        entries["location"] = "link.bin"
    for key, value in entries.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    (folder / "w.bin").write_bytes(data)


def _cases(root: Path) -> list[dict]:
    seeds = _seed_models()
    cases = []
    for family, count in CASES_PER_FAMILY.items():
        for index in range(count):
            rng = random.Random(f"{SEED}-{family}-{index}")
            name = f"{family}-{index}"
            folder = root / name
            folder.mkdir()
            seed_name = "mapped" if family == "external" else rng.choice(sorted(seeds))
            model = onnx.ModelProto()
            model.CopyFrom(seeds[seed_name])
            if family == "flip":
                data = bytearray(model.SerializeToString())
                for _ in range(rng.randint(1, 4)):
                    data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
                data = bytes(data)
            elif family == "truncate":
                full = model.SerializeToString()
                data = full[: rng.randrange(len(full))]
            elif family == "wire":
                data = _mutate_wire(model, rng)
            else:
                {"tensor": _mutate_tensor, "graph": _mutate_graph}.get(family, lambda m, r: _external_case(folder, m, r))(model, rng)
                data = model.SerializeToString()
            path = folder / "model.onnx"
            path.write_bytes(data)
            keep = [str(p) for p in folder.iterdir() if p.is_file()]
            out = folder / "out" / "o.onnx"
            cases.append({"name": f"{name}-inspect ({seed_name})", "argv": ["inspect", str(path)], "keep": keep})
            cases.append({"name": f"{name}-compile ({seed_name})", "argv": ["compile", str(path), "-o", str(out), "--no-progress"],
                          "keep": keep, "output": str(out)})
    return cases


def _run_batch(batch: list[dict], folder: Path) -> list[dict]:
    cases_file, results_file = folder / "cases.json", folder / "results.json"
    cases_file.write_text(json.dumps(batch))
    subprocess.run([sys.executable, str(WORKER), str(cases_file), str(results_file)], check=True, timeout=600)
    return json.loads(results_file.read_text())


def _problems(result: dict) -> list[str]:
    code, stderr = result["code"], result["stderr"]
    problems = []
    if code not in (0, 2):
        problems.append(f"exit {code}: {stderr.strip()[:300]}")
    if code == 2 and (stderr.count("\n") != 1 or not stderr.startswith("onnxc: error: ")):
        problems.append(f"stderr is not one error line: {stderr[:300]!r}")
    if code == 0 and result.get("output_problem"):
        problems.append(f"exit 0 with an output ONNX or ORT refuses: {result['output_problem']}")
    if code != 0 and result["left"]:
        problems.append(f"files left after failure: {result['left']}")
    if result["changed"]:
        problems.append(f"input changed: {result['changed']}")
    if result["seconds"] > 10:
        problems.append(f"took {result['seconds']:.1f} s")
    return problems


@pytest.mark.slow
def test_mutated_models_end_in_a_clean_exit_0_or_one_error_line(tmp_path):
    started = time.perf_counter()
    cases = _cases(tmp_path)
    batches = [cases[i::WORKERS] for i in range(WORKERS)]
    folders = [tmp_path / f"worker{i}" for i in range(WORKERS)]
    for folder in folders:
        folder.mkdir()
    with ThreadPoolExecutor(WORKERS) as pool:
        results = [r for batch in pool.map(_run_batch, batches, folders) for r in batch]
    assert len(results) == len(cases) == 2 * sum(CASES_PER_FAMILY.values())
    failures = {r["name"]: p for r in results if (p := _problems(r))}
    codes = Counter(r["code"] for r in results)
    print(f"\nfuzz: {len(results)} runs over {len(cases) // 2} mutated models: {dict(codes)}, "
          f"{time.perf_counter() - started:.1f} s, slowest case {max(r['seconds'] for r in results):.2f} s")
    assert not failures, "\n".join(f"{name}: {'; '.join(p)}" for name, p in sorted(failures.items()))
    # The mutations must mostly produce broken models, and some still-valid ones must compile.
    assert codes[2] > len(results) // 2 and codes[0] > 20
