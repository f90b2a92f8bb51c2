"""A downstream consumer of the leadledger stream: a durable JetStream pull consumer.

    pip install nats-py
    python examples/nats_consumer.py --url nats://127.0.0.1:4222 --durable my-crm

It prints one line per event (type, lead, ledger position) and acks it after printing. The
consumer is durable: JetStream remembers what it acked, so stopping it (Ctrl-C, a crash, hours
down) and starting it again with the same `--durable` resumes after the last acked message. The
envelope and every event type are described in docs/nats.md.

With `--subject <prefix>.>` (everything; the default) it also checks each message's `previous`
link: a link to a position it has not seen means messages aged out of the stream (the consumer
was down longer than LEADLEDGER_STREAM_MAX_AGE_DAYS) or were lost; a real consumer would then
read the gap from `GET /v1/events?after=<last position>`. With a narrower filter the previous
message may simply belong to another workspace, so the check is off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import nats
from nats.js.api import AckPolicy, ConsumerConfig


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--stream", default="LEADLEDGER", help="LEADLEDGER_STREAM")
    parser.add_argument("--prefix", default="leadledger", help="LEADLEDGER_SUBJECT_PREFIX")
    parser.add_argument("--subject", help="filter subject (default: <prefix>.>, everything)")
    parser.add_argument("--durable", default="example-consumer",
                        help="the consumer's durable name: its position survives restarts")
    parser.add_argument("--max", type=int, default=0, help="stop after this many (0: never)")
    parser.add_argument("--idle-exit", type=float, default=0.0,
                        help="stop after this many seconds without a message (0: never)")
    return parser.parse_args(argv)


async def consume(args: argparse.Namespace) -> int:
    everything = f"{args.prefix}.>"
    subject = args.subject or everything
    nc = await nats.connect(args.url, connect_timeout=5)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            subject, durable=args.durable, stream=args.stream,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30,
                                  max_ack_pending=1000),
        )
        handled, idle, last = 0, 0.0, None
        while not args.max or handled < args.max:
            want = min(100, args.max - handled) if args.max else 100
            try:
                messages = await sub.fetch(batch=want, timeout=1.0)
            except TimeoutError:  # nats-py raises its own subclass, or asyncio's under load
                idle += 1.0
                if args.idle_exit and idle >= args.idle_exit:
                    break
                continue
            idle = 0.0
            for msg in messages:
                envelope = json.loads(msg.data)
                if subject == everything and last is not None and envelope["previous"] != last:
                    print(f"GAP after {last}: read GET /v1/events?after={last}", flush=True)
                print(f"{envelope['type']} lead={envelope['subject']} "
                      f"workspace={envelope['workspace']} position={envelope['position']}",
                      flush=True)
                last = envelope["position"]
                await msg.ack()  # after handling: a crash before it means a redelivery
                handled += 1
        return handled
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        asyncio.run(consume(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
