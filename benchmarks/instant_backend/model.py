"""A Triton python-backend model that answers at once: ``OUTPUT__0 = INPUT__0[:, :3] > 0`` as float32.

The client's ceiling is measured against it (benchmarks/bench_batch.py): no network, only the server's own
handling of the tensors. The map depends on the input, so different cases get different labels, and it commutes
with flips, so test-time flips give the same labels as none.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT__0").as_numpy()
            out = (x[:, :3] > 0).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT__0", out)]))
        return responses
