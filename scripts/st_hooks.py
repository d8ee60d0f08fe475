"""schemathesis hooks for scripts/api-fuzz.

A client that asks for a deadline of a few milliseconds gets a correct 504 (deadline_exceeded),
which schemathesis' not_a_server_error check would count as a server error. Deadlines are tested
in tests/batching.rs, so the fuzzer keeps x-deadline-ms only when it leaves time to serve.
"""

import schemathesis


@schemathesis.hook
def before_call(context, case, **kwargs):
    headers = case.headers or {}
    for key in list(headers):
        if key.lower() == "x-deadline-ms":
            try:
                if int(str(headers[key]).strip()) < 1000:
                    del headers[key]
            except ValueError:
                pass
