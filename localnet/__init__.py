"""A whole subnet on 127.0.0.1: wallets, subnet file, miners, validator, API workers."""
