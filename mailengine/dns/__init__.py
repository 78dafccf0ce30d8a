"""Where mail for a domain goes (RFC 5321 §5.1, manual §3 and §6).

Pure: ``answer`` (what the delivery engine gets, and its fake), ``bypass`` (the
bypass table), ``records`` (DNS answers and CNAMEs), ``targets`` (MX order,
failure reasons), ``cache`` (TTLs and the answer cache), ``resolvconf``.
Shell: ``nameservers`` (twisted.names client.Resolver), ``resolver``
(MailResolver: bypass, cache, coalescing), ``preload`` (preload domains kept warm).
"""
