#!/usr/bin/env node
import { main } from '../dist/controller/main.js';

await main(process.argv);
