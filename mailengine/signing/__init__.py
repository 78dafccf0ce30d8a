"""DKIM signing of relay mail: key files and TXT records, the choice of key by From:
domain, and the signature itself (dkimpy canonicalises, OpenSSL signs)."""
