"""The node tree: what the mount shows, one kind of node per module, built by `kinds`.

`base` (the node protocol and its defaults), `context` (what one mount shares), `inodes`
(node keys, the inode table), `names`, `pool_state`; the kinds: `root`, `pooldir`,
`object_file`, `image_pool`, `image_file`, `snapshots`, `stats`; `kinds` builds them all.
"""
