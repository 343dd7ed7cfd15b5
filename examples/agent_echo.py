#!/usr/bin/env python3
"""Reference agent for voicegate's agent bridge (docs/agent-protocol.md).

Like the built-in echo agent: after each caller utterance ends, it plays the utterance back as a
new turn; when the caller talks over it (barge_in) it stops. Standard library + `websockets`.

    python3 -m pip install --user websockets          # 13 or newer
    python3 examples/agent_echo.py [--host 127.0.0.1] [--port 9000]
    cargo run --release -- --agent ws://127.0.0.1:9000/agent   # then call it: you hear yourself
"""
import argparse, asyncio, json  # noqa: E401

from websockets.asyncio.server import serve

MAX_UTTERANCE_S = 10  # as the built-in agent: a longer utterance keeps its last 10 s
CHUNK_BYTES = 4_096  # audio may go out in chunks of any even size


async def call(ws):
    if ws.request.path != "/agent":
        await ws.close(1008, "unknown path")
        return
    buf, base = bytearray(), 0  # caller audio since stream position `base` (2 bytes a sample)
    cap, player = 0, None

    async def play(utterance):
        await ws.send(json.dumps({"type": "turn"}))
        for i in range(0, len(utterance), CHUNK_BYTES):
            await ws.send(utterance[i:i + CHUNK_BYTES])
        await ws.send(json.dumps({"type": "end_turn"}))

    def stop_playing():
        player and player.cancel()  # cancelling a finished task does nothing

    async for msg in ws:
        if isinstance(msg, bytes):
            buf += msg
            if len(buf) > 4 * cap:  # forward-all and nobody speaking: keep memory bounded
                drop = (len(buf) - 2 * cap) // 2 * 2
                del buf[:drop]
                base += drop // 2
            continue
        ev = json.loads(msg)
        kind = ev.get("type")
        if kind == "start":
            cap = ev["agent_rate"] * MAX_UTTERANCE_S * 2
            await ws.send(json.dumps({"type": "log", "message": "agent_echo.py here"}))
        elif kind == "speech_started":
            cut = max(0, (ev["stream_pos"] - base) * 2)
            del buf[:cut]
            base += cut // 2
        elif kind == "speech_ended":
            end = max(0, (ev["stream_pos"] - base) * 2)
            utterance = bytes(buf[max(0, end - cap):end])
            del buf[:end]
            base += end // 2
            stop_playing()  # a new utterance replaces the rest of the one playing
            if utterance:
                player = asyncio.create_task(play(utterance))
        elif kind == "barge_in":
            stop_playing()  # voicegate already cleared playback; send no more of that turn
        elif kind == "stop":
            stop_playing()
            break
        # Anything else (dtmf, playout, types added later) is ignored, as the protocol asks.


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    a = p.parse_args()
    async with serve(call, a.host, a.port, max_size=1 << 20) as server:
        print(f"agent_echo.py: ws://{a.host}:{a.port}/agent", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
