"""Fine-tune Parts2Whole from a YAML recipe: `accelerate launch train.py --config configs/<recipe>.yaml`."""

from parts2whole.train.trainer import main

if __name__ == "__main__":
    main()
