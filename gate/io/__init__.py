"""gpiozero devices with an injected pin factory: flapper relay, presence and passage
sensors, emergency input, indicators. Built with the gate runtime; nothing here yet."""
