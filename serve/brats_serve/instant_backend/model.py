"""A Triton python-backend model that answers at once: ``OUTPUT__0 = INPUT__0[:, :3] > 0`` as float32.

The client's ceiling is measured against it (benchmarks/bench_batch.py): no network, only the server's own
handling of the tensors. The map depends on the input, so different cases get different labels, and it commutes
with flips. The config parameter ``delay_s`` (default 0) makes each execution wait that long first, without using
a CPU: a stand-in for a remote GPU server's compute and transfer time. Tensor names and the output's channels come
from the config (brats_serve/instant.py writes them from ``brats_client.contract``).
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.delay_s = float(config.get("parameters", {}).get("delay_s", {}).get("string_value", "0"))
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.out_channels = int(config["output"][0]["dims"][0])

    def execute(self, requests):
        if self.delay_s:
            time.sleep(self.delay_s)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            out = (x[:, : self.out_channels] > 0).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, out)]))
        return responses
