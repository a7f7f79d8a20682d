"""The consumer pipeline's parts, each written once for every backend and used by
:class:`polybus.Subscription`: per-key gating (:mod:`.keys`), lease keeping
(:mod:`.leases`) and supervision with health (:mod:`.supervision`)."""
