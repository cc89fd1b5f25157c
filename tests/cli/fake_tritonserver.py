"""Pieces of the fake ``tritonserver`` scripts that stand in for the binary in tests/cli: each script parses
Triton's ``--name=value`` arguments into ``args`` and ends with :data:`SERVE_READY`."""

# answers /v2/health/ready (and every GET) with 200 on the --http-address/--http-port it was given, until killed
SERVE_READY = """\
class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *a):
        pass

http.server.HTTPServer((args["http-address"], int(args["http-port"])), Ready).serve_forever()
"""
