"""The async shell: cases, partners filing with us, delivery. Loads, asks the core, writes what it says."""
