"""The values the command-line tests give every option to check that an error line stays short."""

# A value of 100,000 characters (a file's text pasted where a value goes, a runaway expansion), and
# a number of 4,000 digits (which Python's int() still reads; as a float, infinity): each error line
# quotes either cut short. Before, most lines held the whole value (about 100 kB).
HUGE = {"text": "x" * 100_000, "number": "9" * 4_000}
