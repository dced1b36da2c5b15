#!/usr/bin/env node
import '../dist/src/busrtd.js';
