"""The validator process: metagraph, availability, the miner directory and the scoring queue."""
