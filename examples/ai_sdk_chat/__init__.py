"""A chat on the Vercel AI SDK's own client (its Chat class and DefaultChatTransport), served by resumable streams.

Run it with ``python -m examples.ai_sdk_chat`` (see ``README.md`` beside this file).
"""
