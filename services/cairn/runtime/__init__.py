"""The shared service runtime: settings, logging, errors, gRPC server, callers, REST bodies."""
