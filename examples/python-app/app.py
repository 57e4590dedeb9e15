"""A small app on Breakwater: one whole answer, one streamed, and the OpenAI SDK through the sidecar.

    pip install "./clients/python[openai]" openai
    BREAKWATER_SOCKET=/run/breakwater/breakwater.sock python3 examples/python-app/app.py

Route `default` must exist in the daemon's config. Exits 0 when every step worked.
"""
from __future__ import annotations

import sys

import breakwater

try:  # the OpenAI SDK part needs the `openai` extra
    import httpx
    import openai

    import breakwater.openai
    HAVE_SDK = True
except ImportError:
    HAVE_SDK = False

MESSAGES = [{"role": "user", "content": "Say hello in five words."}]


def main() -> int:
    client = breakwater.Client(client_name="python-app")  # $BREAKWATER_SOCKET, else the system socket
    client.wait_ready(10)

    answer = client.send("default", {"messages": MESSAGES, "max_tokens": 32})
    print("whole answer from %s/%s after %d attempt(s): %s" % (
        answer.provider, answer.model, answer.attempts, answer.response["choices"][0]["message"]["content"]))

    with client.stream("default", {"messages": MESSAGES}) as stream:
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in stream if c.get("choices"))
    print("streamed answer: %s" % text)

    if not HAVE_SDK:
        print("openai SDK not installed: skipping that part")
        return 0
    sdk = openai.OpenAI(api_key="unused", base_url="http://breakwater/v1", max_retries=0,
                        http_client=httpx.Client(transport=breakwater.openai.Transport()))
    completion = sdk.chat.completions.create(model="default", messages=MESSAGES)  # type: ignore[arg-type]
    print("through the OpenAI SDK: %s" % completion.choices[0].message.content)

    try:
        client.send("no-such-route", {"messages": MESSAGES})
    except breakwater.UnknownRoute as e:
        print("an unknown route raises %s (%s)" % (type(e).__name__, e.code_name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
