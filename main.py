"""fomm-live: real-time face puppeteering with the First-Order Motion Model.

    python main.py                      # the GUI
    python main.py --headless --input 0 --avatar me.png --virtual-camera
    python main.py --list-cameras
"""
import sys

from live.app import main

if __name__ == '__main__':
    sys.exit(main())
