"""Caps shared between MailEngine nodes through Redis ([cluster] redis_url): what a node
holds and decides alone (book, pure), the Lua scripts, and the Twisted shell (node)."""
