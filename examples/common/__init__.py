"""Plumbing the examples share: the command line, dialect-neutral read-model SQL, and the
bank-account and order stories' events. Not an example itself: read the others first."""
