"""Federation: forwarding stored statements to other LRSs, and pulling theirs (design notes,
section 7).

- `client`: an httpx client that speaks xAPI to any conformant LRS;
- `filters`: which statements a destination wants;
- `forwarding`: fan-out (statement -> durable delivery rows) and delivery (batches, back-off,
  dead letters);
- `pulling`: polling sources from a checkpoint;
- `dispatch`: what drives both, in-process (embedded mode) or through Celery;
- `secrets`: encryption of the peer credentials kept in the database.
"""
