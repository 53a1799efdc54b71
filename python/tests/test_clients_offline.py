"""The real clients, offline: a `TelegramClient` on `VaultSession` and a Pyrogram `Client` on
`VaultStorage` resolve cached peers without touching the network (they are never connected)."""

import asyncio
import datetime
import os

import pytest


def test_telethon_client_resolves_cached_entities(daemon):
    pytest.importorskip("telethon")
    from telethon import TelegramClient
    from telethon.crypto import AuthKey
    from telethon.tl import types

    from session_vault.telethon import VaultSession

    s = VaultSession("tbot", socket=daemon.socket)
    s.set_dc(2, "149.154.167.51", 443)
    s.auth_key = AuthKey(os.urandom(256))
    s.process_entities(
        types.contacts.ResolvedPeer(
            peer=types.PeerUser(42),
            users=[types.User(id=42, access_hash=4242, username="Alice", phone="15551234",
                              first_name="Alice")],
            chats=[types.Channel(id=77, title="News", photo=types.ChatPhotoEmpty(),
                                 date=datetime.datetime(2024, 1, 1), access_hash=7777,
                                 username="newsroom", broadcast=True)],
        )
    )
    s.close()  # written to the vault; a new process (here: a new session object) reads it

    async def run():
        client = TelegramClient(VaultSession("tbot", socket=daemon.socket), 1, "0" * 32)
        try:
            assert not client.is_connected()
            assert await client.get_input_entity(42) == types.InputPeerUser(42, 4242)
            assert await client.get_input_entity("@alice") == types.InputPeerUser(42, 4242)
            assert await client.get_input_entity("+15551234") == types.InputPeerUser(42, 4242)
            assert await client.get_input_entity(-1000000000077) == types.InputPeerChannel(77, 7777)
            assert await client.get_input_entity("newsroom") == types.InputPeerChannel(77, 7777)
            assert await client.get_input_entity(types.PeerChannel(77)) == types.InputPeerChannel(77, 7777)
            assert client.session.dc_id == 2 and client.session.auth_key is not None
        finally:
            client.session.close()

    asyncio.run(run())


def test_pyrogram_client_resolves_cached_peers(daemon):
    pytest.importorskip("pyrogram")
    from pyrogram import Client, raw

    from session_vault.pyrogram import VaultStorage

    async def seed():
        st = VaultStorage("pbot", socket=daemon.socket)
        await st.open()
        await st.update_peers([
            (42, 4242, "user", "alice", "15551234"),
            (-1000000000077, 7777, "channel", "newsroom", None),
            (-55, 0, "group", None, None),
        ])
        await st.save()
        await st.close()

    async def run():
        client = Client("pbot", api_id=1, api_hash="0" * 32, in_memory=True)
        client.storage = VaultStorage("pbot", socket=daemon.socket)
        await client.storage.open()

        async def no_network(*_a, **_k):
            raise AssertionError("resolve_peer went to the network")

        # resolve_peer refuses to run on a client that was never started; say it is, and make
        # any request to Telegram fail the test: only the storage may answer.
        client.invoke = no_network
        client.is_connected = True
        try:
            assert await client.resolve_peer(42) == raw.types.InputPeerUser(user_id=42, access_hash=4242)
            assert await client.resolve_peer("alice") == raw.types.InputPeerUser(user_id=42, access_hash=4242)
            assert await client.resolve_peer("@alice") == raw.types.InputPeerUser(user_id=42, access_hash=4242)
            assert await client.resolve_peer("+1 555 1234") == raw.types.InputPeerUser(user_id=42, access_hash=4242)
            assert await client.resolve_peer(-1000000000077) == raw.types.InputPeerChannel(
                channel_id=77, access_hash=7777)
            assert await client.resolve_peer("newsroom") == raw.types.InputPeerChannel(
                channel_id=77, access_hash=7777)
            assert await client.resolve_peer(-55) == raw.types.InputPeerChat(chat_id=55)
        finally:
            await client.storage.close()

    asyncio.run(seed())
    asyncio.run(run())
