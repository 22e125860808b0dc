"""The shard process: `VenueShard` (typed decisions over memory and LMDB), its store, venues,
quota operations and signed-code claims, and `ShardService`, the Ray actor that owns the bytes."""
