#!/usr/bin/env node
import '../dist/src/busrt.js';
