"""fomm-live: real-time face puppeteering with the First-Order Motion Model.

    python main.py                                   # the window
    python main.py run --input 0 --avatar me.png --virtual-camera
    python main.py cameras
"""
import sys

from live.app import main

if __name__ == '__main__':
    sys.exit(main())
