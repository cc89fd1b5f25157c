"""The flip companion as an ONNX ``Loop`` over the plain network's graph: one pass's memory in OpenVINO.

:class:`brats_export.server_flips.ServerFlips` traced gives the four passes one after another in one graph. ONNX
Runtime and libtorch free each pass's activations as they go, but OpenVINO's CPU plugin keeps buffers of every
node of a dynamic-shape graph, so four unrolled passes held 1.7 times the plain model's memory for one BraTS
crop. Inside a ``Loop`` the pass is one body graph that OpenVINO runs four times on the same buffers (1.1 times).
ONNX Runtime runs a ``Loop`` body without its memory plan (2.1 times), so its companion stays unrolled.

The loop computes what ServerFlips computes, in the same order: iteration ``i`` gathers the input along X and Y
in the order of flip ``i`` (reversed or not), runs the plain graph, gathers the output back the same way and adds
it to the running sum, which starts at zero (``0 + a == a`` exactly); the sum is divided by the number of flips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from brats_client import tta
from brats_client.contract import INPUT_NAME, OUT_CHANNELS, OUTPUT_NAME
from onnx import TensorProto, helper, numpy_helper

PASS = "pass/"  # prefix of the plain graph's names inside the loop body


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _body(plain: onnx.GraphProto) -> onnx.GraphProto:
    """One flip: gather the input, the plain graph, gather the output back, add it to the sum."""
    weights = {t.name for t in plain.initializer}
    (net_in,), (net_out,) = plain.input, plain.output

    def renamed(name: str) -> str:
        if not name or name in weights:  # optional inputs stay empty; weights come from the outer graph
            return name
        return PASS + "x" if name == net_in.name else PASS + name

    nodes = [
        helper.make_node("Gather", ["flip_x", "i"], ["fx"]),
        helper.make_node("Gather", ["flip_y", "i"], ["fy"]),
        helper.make_node("Where", ["fx", "reverse_x", "forward_x"], ["index_x"]),
        helper.make_node("Where", ["fy", "reverse_y", "forward_y"], ["index_y"]),
        helper.make_node("Gather", [INPUT_NAME, "index_x"], ["in_x"], axis=2),
        helper.make_node("Gather", ["in_x", "index_y"], [PASS + "x"], axis=3),
    ]
    for node in plain.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = PASS + node.name
        copy.input[:] = [renamed(n) for n in node.input]
        copy.output[:] = [PASS + n for n in node.output]
        nodes.append(copy)
    nodes += [
        helper.make_node("Gather", [PASS + net_out.name, "index_x"], ["out_x"], axis=2),
        helper.make_node("Gather", ["out_x", "index_y"], ["restored"], axis=3),
        helper.make_node("Add", ["sum_in", "restored"], ["sum_out"]),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    return helper.make_graph(
        nodes, "one_flip",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("sum_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("sum_out", TensorProto.FLOAT, None)],
    )


def loop_companion(plain_onnx: Path, out: Path, flips: str = "flip4") -> Path:
    """Write to ``out`` the flip companion of the network in ``plain_onnx`` as a ``Loop`` (see the module
    docstring); the flips are those of :func:`brats_client.tta.flips`, over X and Y only."""
    passes = tta.flips(flips)
    if any(axis not in (0, 1) for axes in passes for axis in axes):
        raise ValueError(f"the loop companion flips X and Y only; {flips} flips {passes}")
    plain = onnx.load(str(plain_onnx))
    graph = plain.graph
    constants = [
        _const("flip_x", [0 in axes for axes in passes]), _const("flip_y", [1 in axes for axes in passes]),
        _const("passes", np.int64(len(passes))), _const("true", True), _const("count", np.float32(len(passes))),
        _const("zero", np.int64(0)), _const("one", np.int64(1)), _const("minus_one", np.int64(-1)),
        _const("axis_x", np.int64(2)), _const("axis_y", np.int64(3)), _const("channels", [OUT_CHANNELS]),
        _const("zero_1d", [0]), _const("one_1d", [1]), _const("two_1d", [2]), _const("five_1d", [5]),
    ]
    nodes = [helper.make_node("Shape", [INPUT_NAME], ["shape"])]
    for axis in ("x", "y"):
        nodes += [
            helper.make_node("Gather", ["shape", f"axis_{axis}"], [f"size_{axis}"]),
            helper.make_node("Range", ["zero", f"size_{axis}", "one"], [f"forward_{axis}"]),
            helper.make_node("Sub", [f"size_{axis}", "one"], [f"last_{axis}"]),
            helper.make_node("Range", [f"last_{axis}", "minus_one", "minus_one"], [f"reverse_{axis}"]),
        ]
    nodes += [
        helper.make_node("Slice", ["shape", "zero_1d", "one_1d"], ["batch"]),
        helper.make_node("Slice", ["shape", "two_1d", "five_1d"], ["spatial"]),
        helper.make_node("Concat", ["batch", "channels", "spatial"], ["out_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["out_shape"], ["sum_start"],
                         value=numpy_helper.from_array(np.zeros(1, np.float32))),
        helper.make_node("Loop", ["passes", "true", "sum_start"], ["sum"], body=_body(graph)),
        helper.make_node("Div", ["sum", "count"], [OUTPUT_NAME]),
    ]
    loop = helper.make_graph(nodes, "flip_companion_loop", list(graph.input), list(graph.output),
                             initializer=[*graph.initializer, *constants])
    model = helper.make_model(loop, opset_imports=plain.opset_import, ir_version=plain.ir_version,
                              producer_name="brats_export.flip_loop")
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out
